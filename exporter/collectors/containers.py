"""Containers: which image each runs, its state, and whether that image went stale locally.

Sample output::

    docker_container_info{container="web",id="4f2a...",image="busybox:latest",
                          image_id="sha256:4bca...",state="running"} 1.0
    docker_container_created_timestamp_seconds{container="web"} 1.795838100e+09
    docker_container_image_stale{container="web",image="busybox:latest"} 1.0

A container is stale when the tag it was created from now names another local image ID:
the image was pulled or rebuilt and the container was never recreated.
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
            "from." + note, labels=["container", "id", "image", "image_id", "state"])
        created = GaugeMetricFamily(
            "docker_container_created_timestamp_seconds",
            "When the container was created." + note, labels=["container"])
        stale = GaugeMetricFamily(
            "docker_container_image_stale",
            "1 when the tag the container was created from now names another local image "
            "(pulled or rebuilt, container not recreated), else 0." + note,
            labels=["container", "image"])
        for c in snap.containers:
            info.add_metric([c.name, c.id, c.image, c.image_id, c.state], 1)
            created.add_metric([c.name], c.created)
            stale.add_metric([c.name, c.image], 1 if c.stale else 0)
        yield from (info, created, stale)
