"""Local images: identity, size, age, and the dangling ones.

Sample output::

    docker_image_info{digest="sha256:9ae9...",id="sha256:4bca...",image="busybox:latest",
                      repository="busybox",tag="latest"} 1.0
    docker_image_info{digest="",id="sha256:77d1...",image="<none>",repository="<none>",
                      tag="<none>"} 1.0
    docker_image_size_bytes{id="sha256:4bca..."} 1.982263e+06
    docker_image_containers{id="sha256:4bca..."} 2.0
    docker_image_created_timestamp_seconds{id="sha256:4bca..."} 1.795838014e+09
    docker_image_last_tagged_timestamp_seconds{id="sha256:4bca..."} 1.795838014e+09
    docker_images_dangling 1.0
    docker_images_dangling_bytes 3.766e+07

Timestamps, not ages: the age of an image is ``time() - docker_image_created_timestamp_seconds``.
The dangling bytes come from the disk source (``/system/df`` has each image's shared size),
the rest from the engine source.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric

from exporter.collectors import SnapshotCollector, cached
from exporter.snapshots import DiskSnapshot, EngineSnapshot, Image
from exporter.sources.loop import Source

NONE = "<none>"


def _repository(tag_or_digest: str) -> tuple[str, str]:
    """Split "repo:tag" at the last colon after the last slash (registry ports stay whole)."""
    slash = tag_or_digest.rfind("/")
    colon = tag_or_digest.rfind(":")
    if colon > slash:
        return tag_or_digest[:colon], tag_or_digest[colon + 1:]
    return tag_or_digest, ""


def info_rows(image: Image) -> Iterator[tuple[str, str, str, str]]:
    """(image, repository, tag, digest) label values: one per tag, one for a dangling image."""
    if image.tags:
        for ref in image.tags:
            repo, tag = _repository(ref)
            yield ref, repo, tag, image.digest_for(repo)
    else:
        repo = image.repo_digests[0].partition("@")[0] if image.repo_digests else NONE
        yield NONE, repo, NONE, image.digest_for(repo)


class ImagesCollector(SnapshotCollector):
    def __init__(self, source: Source[EngineSnapshot], disk: Source[DiskSnapshot]) -> None:
        super().__init__(source)
        self.disk = disk

    def cache_key(self) -> tuple[object, ...]:
        return (self.source.snapshot, self.disk.snapshot)

    def collect(self) -> Iterator[Metric]:
        snap = self.source.snapshot
        if snap is None:
            return
        note = cached(self.source.interval)
        info = GaugeMetricFamily(
            "docker_image_info",
            "One series per local tag, and one per dangling image (tag \"<none>\"); digest is "
            "the registry digest the image has for that repository, empty when it has none."
            + note, labels=["id", "image", "repository", "tag", "digest"])
        size = GaugeMetricFamily(
            "docker_image_size_bytes",
            "Size of the image including the layers it shares with others." + note,
            labels=["id"])
        containers = GaugeMetricFamily(
            "docker_image_containers",
            "Containers, in any state, created from this image ID." + note, labels=["id"])
        created = GaugeMetricFamily(
            "docker_image_created_timestamp_seconds",
            "When the image was built, from its config." + note, labels=["id"])
        tagged = GaugeMetricFamily(
            "docker_image_last_tagged_timestamp_seconds",
            "When this host last pulled or tagged the image: the engine's LastTagTime, or else "
            "the first time this exporter saw it under the tag (kept across restarts; on the "
            "first start on a host, every tag is first seen at that start). Absent for a "
            "dangling image without LastTagTime." + note, labels=["id"])
        dangling = 0
        for image in snap.images:
            for row in info_rows(image):
                info.add_metric([image.id, *row], 1)
            size.add_metric([image.id], image.size)
            containers.add_metric([image.id], image.containers)
            created.add_metric([image.id], image.created)
            if image.last_tagged is not None:
                tagged.add_metric([image.id], image.last_tagged)
            if image.dangling:
                dangling += 1
        yield from (info, size, containers, created, tagged)
        yield GaugeMetricFamily(
            "docker_images_dangling", "Images with no tag (what docker image prune removes, "
            "less those a container uses)." + note, value=dangling)
        disk = self.disk.snapshot
        if disk is not None and disk.dangling_unused is not None:
            yield GaugeMetricFamily(
                "docker_images_dangling_bytes",
                "Bytes docker image prune (dangling only) would free: the layers of the "
                "dangling images no container uses that no other image shares. Layers shared "
                "only among dangling images are not counted, and BuildKit's build cache may "
                "hold layers until it is pruned too. Absent where /system/df gives no "
                "per-image shared sizes." + cached(self.disk.interval, "/system/df"),
                value=disk.dangling_unused)
        if disk is not None and disk.image_filesystems:  # a Kubernetes node (CRI)
            yield GaugeMetricFamily(
                "docker_image_filesystem_reclaimable_bytes",
                "Bytes of the images no container uses and the runtime has not pinned: what "
                "the kubelet's image garbage collection may delete, at CRI's image sizes "
                "(CRI nodes only)." + note, value=snap.gc_reclaimable())
