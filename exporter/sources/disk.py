"""The disk source: ``/system/df`` as ``docker system df`` reports it.

``parse_disk_usage`` does the arithmetic and is tested on recorded JSON; ``DiskReader`` adds
the call.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from exporter.snapshots import DiskSnapshot, KindUsage, Volume
from exporter.sources.engine import Engine

_ACTIVE_STATES = ("running", "paused", "restarting")


def _int(value: Any, default: int = 0) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _usage(total: int, active: int, size: int, reclaimable: int) -> KindUsage:
    return KindUsage(total=total, active=active, size=max(size, 0),
                     reclaimable=min(max(reclaimable, 0), max(size, 0)))


def _usage_new(doc: Any) -> KindUsage:
    doc = doc if isinstance(doc, Mapping) else {}
    return _usage(_int(doc.get("TotalCount")), _int(doc.get("ActiveCount")),
                  _int(doc.get("TotalSize")), _int(doc.get("Reclaimable")))


def _list(doc: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    items = doc.get(key)
    return [i for i in items if isinstance(i, Mapping)] if isinstance(items, list) else []


def _volume_items(doc: Mapping[str, Any]) -> tuple[Volume, ...]:
    """Each volume: the legacy list, else API 1.52+'s VolumeUsage.Items (verbose only)."""
    items = _list(doc, "Volumes")
    if not items and isinstance(doc.get("VolumeUsage"), Mapping):
        items = _list(doc["VolumeUsage"], "Items")
    out = []
    for v in items:
        usage = v.get("UsageData") if isinstance(v.get("UsageData"), Mapping) else {}
        size, refs = _int(usage.get("Size"), -1), _int(usage.get("RefCount"), -1)
        out.append(Volume(str(v.get("Name", "")), size if size >= 0 else None,
                          refs if refs >= 0 else None))
    return tuple(sorted(out, key=lambda v: v.name))


def _dangling_unused(doc: Mapping[str, Any]) -> int | None:
    """The bytes ``docker image prune`` (dangling only) frees, from the image list: each
    dangling image that no container, in any state, uses frees its unique layers, ``Size`` -
    ``SharedSize`` (each image ID once: Podman lists an image once per tag).

    Layers that only dangling images share are counted as shared, so not at all: an
    undercount where two dangling images share a layer no other image has (Podman: an
    intermediate build image whose only children are dangling; its own unique size is 0).
    None where the answer lists no images (API 1.53+ without verbose) or an image's shared
    size or users are not known.
    """
    if "Images" in doc:
        images = _list(doc, "Images")
    elif isinstance(doc.get("ImageUsage"), Mapping) and "Items" in doc["ImageUsage"]:
        images = _list(doc["ImageUsage"], "Items")
    else:
        return None
    unique: dict[str, int] = {}
    for i in images:
        tags = i.get("RepoTags") if isinstance(i.get("RepoTags"), list) else []
        if any(isinstance(t, str) and t and "<none>" not in t for t in tags):
            continue
        users, size, shared = (_int(i.get(k), -1) for k in ("Containers", "Size", "SharedSize"))
        if min(users, size, shared) < 0:
            return None
        if users == 0:
            unique[str(i.get("Id"))] = max(size - shared, 0)
    return sum(unique.values())


def parse_disk_usage(doc: Mapping[str, Any], podman: bool = False) -> DiskSnapshot:
    """Compute the four rows of ``docker system df`` from a /system/df answer.

    API 1.52 and newer answer with per-kind summaries the daemon computed itself; older
    daemons answer with item lists, from which the figures are computed the way the docker
    CLI computes them, so the numbers match what users see in ``docker system df``.
    Podman's answer is read the way ``podman system df`` reads it (``_podman_usage``).
    """
    if podman:
        return _podman_usage(doc)
    if any(k in doc for k in ("ImageUsage", "ContainerUsage", "VolumeUsage", "BuildCacheUsage")):
        return DiskSnapshot(
            images=_usage_new(doc.get("ImageUsage")),
            containers=_usage_new(doc.get("ContainerUsage")),
            volumes=_usage_new(doc.get("VolumeUsage")),
            build_cache=_usage_new(doc.get("BuildCacheUsage")),
            volume_items=_volume_items(doc),
            dangling_unused=_dangling_unused(doc),
        )

    images = _list(doc, "Images")
    layers = _int(doc.get("LayersSize"))
    used = sum(
        _int(i.get("Size")) - _int(i.get("SharedSize"))
        for i in images
        if _int(i.get("Containers")) > 0 and i.get("Size") != -1 and i.get("SharedSize") != -1
    )
    image_usage = _usage(len(images), sum(1 for i in images if _int(i.get("Containers")) > 0),
                         layers, layers - used)

    containers = _list(doc, "Containers")
    active = [c for c in containers if any(s in str(c.get("State", "")) for s in _ACTIVE_STATES)]
    container_usage = _usage(
        len(containers), len(active),
        sum(_int(c.get("SizeRw")) for c in containers),
        sum(_int(c.get("SizeRw")) for c in containers if c not in active),
    )

    volumes = [v.get("UsageData") if isinstance(v.get("UsageData"), Mapping) else {}
               for v in _list(doc, "Volumes")]
    sized = [v for v in volumes if _int(v.get("Size")) >= 0 and v.get("Size") != -1]
    volume_usage = _usage(
        len(volumes), sum(1 for v in volumes if _int(v.get("RefCount")) > 0),
        sum(_int(v.get("Size")) for v in sized),
        sum(_int(v.get("Size")) for v in sized if _int(v.get("RefCount")) == 0),
    )

    cache = _list(doc, "BuildCache")
    unshared = [c for c in cache if not c.get("Shared")]
    cache_usage = _usage(
        len(cache), sum(1 for c in cache if c.get("InUse")),
        sum(_int(c.get("Size")) for c in unshared),
        sum(_int(c.get("Size")) for c in unshared if not c.get("InUse")),
    )
    return DiskSnapshot(image_usage, container_usage, volume_usage, cache_usage,
                        _volume_items(doc), _dangling_unused(doc))


def _podman_usage(doc: Mapping[str, Any]) -> DiskSnapshot:
    """The three rows of ``podman system df``; Podman has no build cache (buildah keeps
    intermediate images as images), so that kind is absent rather than 0.

    Images come one entry per tag. Podman 4 sends ``LayersSize`` 0 and its CLI adds up every
    entry's Size, so a layer is counted once per image and per tag that holds it: more than
    the disk holds. Podman 5 sends the deduplicated total as ``LayersSize`` and its CLI
    subtracts what the in-use images hold alone, counting each image ID once. Containers are
    active only when running. Volumes in use are counted, not their users (the CLI sums
    RefCount, which can exceed the number of volumes).
    """
    images = _list(doc, "Images")
    layers = _int(doc.get("LayersSize"))
    used = [i for i in images if _int(i.get("Containers")) > 0]
    if layers > 0:
        unique = {str(i.get("Id")): _int(i.get("Size")) - _int(i.get("SharedSize")) for i in used}
        image_usage = _usage(len(images), len(unique), layers, layers - sum(unique.values()))
    else:
        size = sum(_int(i.get("Size")) for i in images)
        image_usage = _usage(len(images), len(used), size,
                             size - sum(_int(i.get("Size")) for i in used))

    containers = _list(doc, "Containers")
    running = [c for c in containers if c.get("State") == "running"]
    container_usage = _usage(
        len(containers), len(running), sum(_int(c.get("SizeRw")) for c in containers),
        sum(_int(c.get("SizeRw")) for c in containers if c not in running))

    volumes = [v.get("UsageData") if isinstance(v.get("UsageData"), Mapping) else {}
               for v in _list(doc, "Volumes")]
    volume_usage = _usage(
        len(volumes), sum(1 for v in volumes if _int(v.get("RefCount")) > 0),
        sum(_int(v.get("Size")) for v in volumes),
        sum(_int(v.get("Size")) for v in volumes if _int(v.get("RefCount")) == 0))
    return DiskSnapshot(image_usage, container_usage, volume_usage, None, _volume_items(doc),
                        _dangling_unused(doc))


class DiskReader:
    """Calls /system/df. One call at a time: the refresh loop that owns it is single-threaded."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def read(self) -> DiskSnapshot:
        doc = self.engine.system_df()
        return parse_disk_usage(doc, self.engine.podman)
