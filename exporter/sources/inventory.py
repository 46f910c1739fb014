"""The engine source: images and containers, and which containers went stale.

``build_engine_snapshot`` joins the Engine API's answers and is tested on recorded JSON;
``EngineReader`` adds the calls and the per-object caches that keep refreshes cheap.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from exporter import reference
from exporter.snapshots import Container, EngineSnapshot, Image
from exporter.sources.engine import Engine, podman_local
from exporter.timestamps import parse_timestamp

log = logging.getLogger(__name__)

VERSION_LABEL = "docker-hygiene.versions."


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _tags(raw: Any) -> tuple[str, ...]:
    """RepoTags or RepoDigests in the engine's short form (Podman lists them in full)."""
    if not isinstance(raw, list):
        return ()
    return tuple(sorted({reference.familiar(t) for t in raw
                         if isinstance(t, str) and t and "<none>" not in t}))


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
    podman: bool = False,
) -> EngineSnapshot:
    """Join images and containers into a snapshot and decide which containers are stale.

    ``last_tagged`` maps image ID to Metadata.LastTagTime; ``created_from`` maps container ID
    to Config.Image for the containers whose listed Image is an ID (see EngineReader).
    On Podman, the RepoDigests of ``localhost/`` names are dropped: they are local builds,
    which nothing asks a registry about, as Docker's local builds have no RepoDigests.
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
        out_images.append(Image(
            id=image_id,
            tags=_tags(img.get("RepoTags")),
            repo_digests=tuple(d for d in _tags(img.get("RepoDigests"))
                               if "@" in d and not (podman and podman_local(d))),
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
        self._said_podman = False

    def read(self) -> EngineSnapshot:
        images = self.engine.images()
        containers = self.engine.containers()
        podman = self.engine.podman
        if podman and not self._said_podman:
            self._said_podman = True
            log.info("the engine is Podman: disk figures are podman system df's, there is no "
                     "build cache and no LastTagTime (those series are absent), localhost/ "
                     "images are local builds, and run/create also count as pulls")

        tag_times: dict[tuple[str, tuple[str, ...], tuple[str, ...]], float | None] = {}
        for img in images:
            key = (str(img.get("Id")), _tags(img.get("RepoTags")), _tags(img.get("RepoDigests")))
            if key in self._tag_times or podman:  # Podman never sets LastTagTime
                tag_times[key] = self._tag_times.get(key)
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
            self.engine.api_version, podman,
        )
