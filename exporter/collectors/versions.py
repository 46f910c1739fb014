"""Newer versions of local version tags, per tag and per container.

Sample output::

    docker_image_newer_version_info{current="1.25.3",image="nginx:1.25.3",latest="1.27.2"} 1.0
    docker_image_versions_behind{image="nginx:1.25.3"} 4.0
    docker_image_versions_behind{image="redis:7.2.4-alpine"} 0.0
    docker_image_newer_version_created_timestamp_seconds{image="nginx:1.25.3"} 1.7951e+09
    docker_container_newer_version_available{container="web",image="nginx:1.25.3"} 1.0
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric

from exporter.collectors import SnapshotCollector, cached
from exporter.timestamps import build_time


class VersionsCollector(SnapshotCollector):
    def collect(self) -> Iterator[Metric]:
        snap = self.source.snapshot
        if snap is None:
            return
        note = cached(self.interval, "tag lists")
        info = GaugeMetricFamily(
            "docker_image_newer_version_info",
            "1 when the registry has a newer version of the tag's shape (same v, number of "
            "components and suffix) with an image for this platform; latest is the newest."
            + note, labels=["image", "current", "latest"])
        behind = GaugeMetricFamily(
            "docker_image_versions_behind",
            "Newer versions of the tag's shape upstream with an image for this platform."
            + note, labels=["image"])
        created = GaugeMetricFamily(
            "docker_image_newer_version_created_timestamp_seconds",
            "When the first newer version's image was built for this platform (Docker Hub: "
            "pushed): a newer version has existed since then; absent when that is a "
            "reproducible build's placeholder date (before 2013-03-13)." + note,
            labels=["image"])
        for v in snap.images:
            behind.add_metric([v.image], v.behind)
            if v.latest:
                info.add_metric([v.image, v.current, v.latest], 1)
                if (built := build_time(v.first_created)) is not None:
                    created.add_metric([v.image], built)
        yield from (info, behind, created)
        containers = GaugeMetricFamily(
            "docker_container_newer_version_available",
            "1 when a newer version of the container's tag exists under the rules in force "
            "for it (its labels docker-hygiene.versions.*), else 0." + note,
            labels=["container", "image", "namespace", "pod"])
        for name, image, available, *pod in snap.containers:
            namespace, pod_name = (*pod, "", "")[:2]
            containers.add_metric([name, image, namespace, pod_name], 1 if available else 0)
        yield containers
