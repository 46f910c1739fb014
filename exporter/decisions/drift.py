"""Drift: has the registry moved a tag on, for this host's platform, and does a container
run what the registry serves now?

Pure functions of what the host has and what the registry serves. Documents are asked for
through ``document(digest)``; digests name their bytes for ever, so the answer does not
depend on when or how they are fetched, and tests pass a dictionary.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from exporter.decisions.provenance import CLASSIC
from exporter.registry.manifest import Manifest, Platform, RegistryError
from exporter.snapshots import Container, Image, ImageManifest, TagState


@dataclass(frozen=True)
class Local:
    """What the host has for one tag."""

    image_id: str  # the config digest (classic store) or the index/manifest digest (containerd)
    digests: frozenset[str]  # the image's RepoDigests for the tag's repository
    # The manifest the host has for the platform checked (containerd store, API 1.47+);
    # "" when the engine does not say.
    platform_manifest: str = ""
    # The engine's image store (decisions.provenance: classic, containerd, podman); "" when
    # not known. Only on the classic store is the image ID known to be the config digest.
    store: str = ""

    @property
    def id_is_config(self) -> bool:
        """The image ID is the config digest of the manifest pulled (Docker's classic store;
        the containerd store says ``platform_manifest`` instead, when it says anything)."""
        return self.store == CLASSIC and not self.platform_manifest


@dataclass(frozen=True)
class Decision:
    status: str  # current, drifted or platform_unchanged
    digest: str  # what the tag names upstream now
    config: str = ""  # upstream's config digest for this platform; "" when not read
    manifest: str = ""  # upstream's manifest digest for this platform; "" when not known


def platform_manifest(manifests: Iterable[ImageManifest], platform: Platform) -> str:
    """The manifest a local image has, in full, for ``platform`` ("" when none).

    The exact variant first, then one that does not say (as the engine picks them).
    """
    found = [m for m in manifests if m.available and platform.matches(
        {"os": m.os, "architecture": m.architecture, "variant": m.variant})]
    exact = [m for m in found if m.variant == platform.variant]
    return (exact or found)[0].digest if found else ""


def decide(local: Local, head: str, platform: Platform,
           document: Callable[[str], Manifest]) -> Decision:
    """The tag's state, given the digest the registry serves for it now (``head``).

    Equal to a RepoDigest: current. Else the manifest for this platform decides. When the
    host's own manifest for this platform is known (containerd store), it is compared with
    upstream's: the same manifest, or one with the same config: platform_unchanged (another
    platform was added or rebuilt; the index digest, which is the local image ID there,
    changed all the same). On the classic store the image ID is the config digest: the same
    config is platform_unchanged, another one drifted, and nothing else is read (an image
    pulled for another ``--platform`` is judged by its own config). Otherwise (containerd
    store before API 1.47, Podman, a store not known) the local image's config, or the
    platform entry of the index this host pulled: platform_unchanged; anything else:
    drifted. Raises RegistryError when a document cannot be read or the index has no entry
    for this platform.

    Documents read, in this order: none for current; the new manifest or index (``head``),
    then for an index its entry for this platform; on the classic store that is all
    (``last_read``). Only without a known store kind or platform manifest are the
    RepoDigests (the index this host pulled) read as well.
    """
    if head in local.digests:
        return Decision("current", head, manifest=local.platform_manifest)
    new = document(head)
    new_platform = new.platform_digest(platform) if new.is_index else head
    if new_platform is None:
        raise RegistryError("no_platform", f"{head} has no manifest for {platform}")
    manifest = document(new_platform) if new_platform != head else new
    config = manifest.config_digest() or ""
    if local.platform_manifest:
        if new_platform == local.platform_manifest or (
                config and _config_of(local.platform_manifest, document) == config):
            return Decision("platform_unchanged", head, config, new_platform)
        return Decision("drifted", head, config, new_platform)
    if config and config == local.image_id:
        return Decision("platform_unchanged", head, config, new_platform)
    if config and local.id_is_config:
        return Decision("drifted", head, config, new_platform)
    # Image stores that do not use the config digest as ID (containerd) and do not say
    # which manifest they hold (API before 1.47): compare the platform entries of the old
    # and the new index instead.
    for old_digest in sorted(local.digests):
        if old_digest == new_platform:
            return Decision("platform_unchanged", head, config, new_platform)
        try:
            old = document(old_digest)
        except RegistryError:
            continue
        if old.is_index and old.platform_digest(platform) == new_platform:
            return Decision("platform_unchanged", head, config, new_platform)
    return Decision("drifted", head, config, new_platform)


def last_read(local: Local, head: str, digest: str) -> bool:
    """Whether ``decide`` reads no document after ``digest`` (what a caller may start in
    parallel once the decision's last request is on its way): on the classic store the
    platform entry of a new index, whose config decides. Elsewhere, and for a single
    manifest (``head`` itself, which may turn out to be an index), more may follow."""
    return local.id_is_config and digest != head


def _config_of(digest: str, document: Callable[[str], Manifest]) -> str:
    """The config digest of a manifest, "" when it cannot be read (deleted upstream)."""
    try:
        return document(digest).config_digest() or ""
    except RegistryError:
        return ""


def container_drift(status: str, tag_image_id: str, upstream_config: str,
                    container_image_id: str, tag_manifest: str = "",
                    upstream_manifest: str = "", container_manifest: str = "") -> int | None:
    """1 when the container does not run what the registry serves for its tag now.

    A current tag still leaves a container drifted when it runs other content (pulled again,
    never recreated); None when the tag's state is unknown. Where the platform manifests are
    known (containerd store) they decide, not the image IDs: those are index digests there,
    which change whenever any platform does.
    """
    if status == "drifted":
        if container_manifest and upstream_manifest:
            return 0 if container_manifest == upstream_manifest else 1
        return 0 if upstream_config and upstream_config == container_image_id else 1
    if status in ("current", "platform_unchanged"):
        if container_manifest and (tag_manifest or upstream_manifest):
            return 0 if container_manifest in (tag_manifest, upstream_manifest) else 1
        return 0 if container_image_id == tag_image_id else 1
    return None


def container_state(state: TagState, images: dict[str, Image], container: Container
                    ) -> int | None:
    """``container_drift`` of a container whose tag is in ``state``, with the platform
    manifests the engine gave (``images`` by ID): what the metric and the pages both show."""
    tag_image = images.get(state.image_id)
    return container_drift(state.verdict or "unknown", state.image_id, state.upstream_config,
                           container.image_id, tag_image.platform_manifest if tag_image else "",
                           state.upstream_manifest, container.manifest)
