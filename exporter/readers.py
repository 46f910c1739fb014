"""Source readers: turn Engine API answers into snapshots.

The pure ``parse_*``/``build_*`` functions do the arithmetic and are tested on recorded JSON;
the reader classes add the calls and the per-object caches that keep refreshes cheap.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from exporter import reference
from exporter.engine import Engine
from exporter.snapshots import Container, DiskSnapshot, EngineSnapshot, Image, KindUsage

_ACTIVE_STATES = ("running", "paused", "restarting")
_RFC3339 = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)")


def parse_timestamp(text: Any) -> float | None:
    """RFC 3339 with nanoseconds, as the engine writes it; None for Go's zero time or junk."""
    if not isinstance(text, str):
        return None
    m = _RFC3339.fullmatch(text.strip())
    if not m or m.group(1).startswith("0001-"):
        return None
    frac = (m.group(2) or "0")[:6].ljust(6, "0")
    zone = "+00:00" if m.group(3) == "Z" else m.group(3)
    return datetime.fromisoformat(f"{m.group(1)}.{frac}{zone}").timestamp()


VERSION_LABEL = "docker-hygiene.versions."


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


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


def parse_disk_usage(doc: Mapping[str, Any]) -> DiskSnapshot:
    """Compute the four rows of ``docker system df`` from a /system/df answer.

    API 1.52 and newer answer with per-kind summaries the daemon computed itself; older
    daemons answer with item lists, from which the figures are computed the way the docker
    CLI computes them, so the numbers match what users see in ``docker system df``.
    """
    if any(k in doc for k in ("ImageUsage", "ContainerUsage", "VolumeUsage", "BuildCacheUsage")):
        return DiskSnapshot(
            images=_usage_new(doc.get("ImageUsage")),
            containers=_usage_new(doc.get("ContainerUsage")),
            volumes=_usage_new(doc.get("VolumeUsage")),
            build_cache=_usage_new(doc.get("BuildCacheUsage")),
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
    return DiskSnapshot(image_usage, container_usage, volume_usage, cache_usage)


def _tags(raw: Any) -> tuple[str, ...]:
    if not isinstance(raw, list):
        return ()
    return tuple(sorted({t for t in raw if isinstance(t, str) and t and "<none>" not in t}))


def _label(c: Mapping[str, Any], key: str) -> str:
    labels = c.get("Labels")
    value = labels.get(key) if isinstance(labels, Mapping) else None
    return value if isinstance(value, str) else ""


def _version_labels(c: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    labels = c.get("Labels")
    if not isinstance(labels, Mapping):
        return ()
    return tuple(sorted((k[len(VERSION_LABEL):], v) for k, v in labels.items()
                        if isinstance(k, str) and k.startswith(VERSION_LABEL)
                        and isinstance(v, str)))


def _container_name(c: Mapping[str, Any]) -> str:
    names = c.get("Names")
    if isinstance(names, list) and names and isinstance(names[0], str):
        return names[0].lstrip("/")
    return str(c.get("Id", ""))[:12]


def build_engine_snapshot(
    images: Iterable[Mapping[str, Any]],
    containers: Iterable[Mapping[str, Any]],
    last_tagged: Mapping[str, float | None],
    created_from: Mapping[str, str],
    api_version: str = "",
) -> EngineSnapshot:
    """Join images and containers into a snapshot and decide which containers are stale.

    ``last_tagged`` maps image ID to Metadata.LastTagTime; ``created_from`` maps container ID
    to Config.Image for the containers whose listed Image is an ID (see EngineReader).
    """
    images = list(images)
    containers = list(containers)
    by_tag: dict[str, str] = {}
    for img in images:
        for tag in _tags(img.get("RepoTags")):
            by_tag[reference.familiar(tag)] = str(img.get("Id"))

    out_containers = []
    uses: dict[str, int] = {}
    for c in containers:
        image_id = str(c.get("ImageID", ""))
        uses[image_id] = uses.get(image_id, 0) + 1
        listed = str(c.get("Image", ""))
        # The engine lists the original reference while it still names the container's image,
        # and the image ID once it does not; then Config.Image tells what it was created from.
        origin = created_from.get(str(c.get("Id")), listed) if listed == image_id else listed
        image = origin if reference.is_image_id(origin) else reference.familiar(origin)
        now_names = by_tag.get(image)
        out_containers.append(Container(
            id=str(c.get("Id", "")),
            name=_container_name(c),
            image=image,
            image_id=image_id,
            state=str(c.get("State", "")),
            created=float(_int(c.get("Created"))),
            stale=now_names is not None and now_names != image_id,
            drift_opt_out=_label(c, "docker-hygiene.drift").lower() == "false",
            version_labels=_version_labels(c),
        ))

    out_images = []
    for img in images:
        image_id = str(img.get("Id", ""))
        digests = img.get("RepoDigests")
        out_images.append(Image(
            id=image_id,
            tags=_tags(img.get("RepoTags")),
            repo_digests=tuple(sorted(d for d in digests if isinstance(d, str) and "@" in d
                                      and "<none>" not in d)) if isinstance(digests, list) else (),
            size=max(_int(img.get("Size")), 0),
            created=float(_int(img.get("Created"))),
            last_tagged=last_tagged.get(image_id),
            containers=uses.get(image_id, 0),
        ))
    out_images.sort(key=lambda i: i.id)
    out_containers.sort(key=lambda c: c.name)
    return EngineSnapshot(tuple(out_images), tuple(out_containers), api_version)


class EngineReader:
    """Reads images and containers; inspects only what it has not seen before.

    LastTagTime needs one inspect per image; it is cached per (ID, tags, digests) because a
    pull or tag changes those. Config.Image never changes for a container, so it is cached
    per container ID, and only needed when the engine lists the container's image by ID.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._tag_times: dict[tuple[str, tuple[str, ...], tuple[str, ...]], float | None] = {}
        self._config_image: dict[str, str] = {}

    def read(self) -> EngineSnapshot:
        images = self.engine.images()
        containers = self.engine.containers()

        tag_times: dict[tuple[str, tuple[str, ...], tuple[str, ...]], float | None] = {}
        for img in images:
            key = (str(img.get("Id")), _tags(img.get("RepoTags")), _tags(img.get("RepoDigests")))
            if key in self._tag_times:
                tag_times[key] = self._tag_times[key]
            else:
                inspected = self.engine.inspect_image(key[0]) or {}
                meta = inspected.get("Metadata")
                tag_times[key] = parse_timestamp(meta.get("LastTagTime")) if isinstance(
                    meta, Mapping) else None
        self._tag_times = tag_times

        config_image: dict[str, str] = {}
        for c in containers:
            cid = str(c.get("Id"))
            if c.get("Image") != c.get("ImageID"):
                continue
            if cid not in self._config_image:
                inspected = self.engine.inspect_container(cid) or {}
                cfg = inspected.get("Config")
                origin = cfg.get("Image") if isinstance(cfg, Mapping) else None
                self._config_image[cid] = origin if isinstance(origin, str) else str(c["Image"])
            config_image[cid] = self._config_image[cid]
        self._config_image = config_image

        return build_engine_snapshot(
            images, containers, {k[0]: v for k, v in tag_times.items()}, config_image,
            self.engine.api_version,
        )


class DiskReader:
    """Calls /system/df. One call at a time: the refresh loop that owns it is single-threaded."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def read(self) -> DiskSnapshot:
        return parse_disk_usage(self.engine.system_df())
