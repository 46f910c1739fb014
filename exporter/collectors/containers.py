"""Containers: which image each runs, its state, and whether that image went stale locally.

Sample output::

    docker_container_info{container="web",id="4f2a...",image="busybox:latest",
                          image_id="sha256:4bca...",namespace="",pod="",state="running"} 1.0
    docker_container_created_timestamp_seconds{container="web",namespace="",pod=""} 1.7958e+09
    docker_container_image_stale{container="web",image="busybox:latest",namespace="",
                                 pod=""} 1.0

A container is stale when the tag it was created from now names another local image ID:
the image was pulled or rebuilt and the container was never recreated. On a Kubernetes
node (CRI), ``namespace`` and ``pod`` name the container's pod and ``container`` its name
in the pod; on Docker and Podman both are empty, which Prometheus stores as no label.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric

from exporter.collectors import SnapshotCollector, cached


class ContainersCollector(SnapshotCollector):
    def collect(self) -> Iterator[Metric]:
        snap = self.source.snapshot
        if snap is None:
            return
        note = cached(self.source.interval)
        info = GaugeMetricFamily(
            "docker_container_info",
            "One series per container, in any state; image is the reference it was created "
            "from; namespace and pod are a Kubernetes pod's." + note,
            labels=["container", "id", "image", "image_id", "namespace", "pod", "state"])
        created = GaugeMetricFamily(
            "docker_container_created_timestamp_seconds",
            "When the container was created." + note, labels=["container", "namespace", "pod"])
        stale = GaugeMetricFamily(
            "docker_container_image_stale",
            "1 when the tag the container was created from now names another local image "
            "(pulled or rebuilt, container not recreated), else 0." + note,
            labels=["container", "image", "namespace", "pod"])
        for c in snap.containers:
            info.add_metric([c.name, c.id, c.image, c.image_id, c.namespace, c.pod, c.state], 1)
            created.add_metric([c.name, c.namespace, c.pod], c.created)
            stale.add_metric([c.name, c.image, c.namespace, c.pod], 1 if c.stale else 0)
        yield from (info, created, stale)
