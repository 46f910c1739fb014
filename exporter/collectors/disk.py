"""Disk usage as ``docker system df`` reports it, one series per kind (on Podman, as
``podman system df`` does: no build_cache series there, Podman has none). A Kubernetes node
(CRI) has no such rows: it gets the kubelet's view instead, its image filesystems and what
the kubelet's image garbage collection could delete (``docker_image_filesystem_reclaimable_
bytes``, from the images: collectors/images.py).

Sample output::

    # HELP docker_disk_usage_bytes Disk space used, as docker system df reports it. Cached: ...
    # TYPE docker_disk_usage_bytes gauge
    docker_disk_usage_bytes{kind="images"} 1.982263e+06
    docker_disk_usage_bytes{kind="containers"} 12.0
    docker_disk_reclaimable_bytes{kind="images"} 0.0
    docker_disk_objects{kind="volumes"} 2.0
    docker_disk_active_objects{kind="build_cache"} 0.0

On a CRI node::

    docker_image_filesystem_used_bytes{mountpoint="/var/lib/containerd/io.contai..."} 2.0e+06
    docker_image_filesystem_capacity_bytes{mountpoint="/var/lib/containerd/io.c..."} 1.0e+11
    docker_image_filesystem_inodes_used{mountpoint="/var/lib/containerd/io.conta..."} 18.0
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
        note = cached(self.source.interval, "/system/df" if snap.by_kind() else "ImageFsInfo")
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
        if not snap.image_filesystems:
            return
        used = GaugeMetricFamily(
            "docker_image_filesystem_used_bytes",
            "Bytes used on the filesystem that holds the runtime's images, as CRI's "
            "ImageFsInfo reports it to the kubelet (CRI nodes only)." + note,
            labels=["mountpoint"])
        capacity = GaugeMetricFamily(
            "docker_image_filesystem_capacity_bytes",
            "Size of that filesystem (statvfs), where the exporter sees its mountpoint "
            "(CRI nodes only)." + note, labels=["mountpoint"])
        inodes = GaugeMetricFamily(
            "docker_image_filesystem_inodes_used",
            "Inodes used on that filesystem, as ImageFsInfo reports them (CRI nodes only)."
            + note, labels=["mountpoint"])
        for fs in snap.image_filesystems:
            used.add_metric([fs.mountpoint], fs.used_bytes)
            if fs.capacity_bytes is not None:
                capacity.add_metric([fs.mountpoint], fs.capacity_bytes)
            if fs.inodes_used is not None:
                inodes.add_metric([fs.mountpoint], fs.inodes_used)
        yield from (used, capacity, inodes)
