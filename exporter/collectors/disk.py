"""Disk usage as ``docker system df`` reports it, one series per kind (on Podman, as
``podman system df`` does: no build_cache series there, Podman has none).

Sample output::

    # HELP docker_disk_usage_bytes Disk space used, as docker system df reports it. Cached: ...
    # TYPE docker_disk_usage_bytes gauge
    docker_disk_usage_bytes{kind="images"} 1.982263e+06
    docker_disk_usage_bytes{kind="containers"} 12.0
    docker_disk_reclaimable_bytes{kind="images"} 0.0
    docker_disk_objects{kind="volumes"} 2.0
    docker_disk_active_objects{kind="build_cache"} 0.0
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric

from exporter.collectors import SnapshotCollector, cached


class DiskCollector(SnapshotCollector):
    def collect(self) -> Iterator[Metric]:
        snap = self.source.snapshot
        if snap is None:
            return
        note = cached(self.source.interval, "/system/df")
        families = {
            "usage": GaugeMetricFamily(
                "docker_disk_usage_bytes",
                "Disk space used, as docker system df reports it." + note, labels=["kind"]),
            "reclaimable": GaugeMetricFamily(
                "docker_disk_reclaimable_bytes",
                "Disk space that pruning unused objects would free, as docker system df "
                "reports it." + note, labels=["kind"]),
            "objects": GaugeMetricFamily(
                "docker_disk_objects", "Number of objects of this kind." + note,
                labels=["kind"]),
            "active": GaugeMetricFamily(
                "docker_disk_active_objects",
                "Number of objects of this kind in use by a container or build." + note,
                labels=["kind"]),
        }
        for kind, usage in snap.by_kind().items():
            families["usage"].add_metric([kind], usage.size)
            families["reclaimable"].add_metric([kind], usage.reclaimable)
            families["objects"].add_metric([kind], usage.total)
            families["active"].add_metric([kind], usage.active)
        yield from families.values()
