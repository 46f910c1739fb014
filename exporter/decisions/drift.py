"""Drift: has the registry moved a tag on, for this host's platform, and does a container
run what the registry serves now?

Pure functions of what the host has and what the registry serves. Documents are asked for
through ``document(digest)``; digests name their bytes for ever, so the answer does not
depend on when or how they are fetched, and tests pass a dictionary.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from exporter.registry.manifest import Manifest, Platform, RegistryError


@dataclass(frozen=True)
class Local:
    """What the host has for one tag."""

    image_id: str
    digests: frozenset[str]  # the image's RepoDigests for the tag's repository


@dataclass(frozen=True)
class Decision:
    status: str  # current, drifted or platform_unchanged
    digest: str  # what the tag names upstream now
    config: str = ""  # upstream's config digest for this platform; "" when not read


def decide(local: Local, head: str, platform: Platform,
           document: Callable[[str], Manifest]) -> Decision:
    """The tag's state, given the digest the registry serves for it now (``head``).

    Equal to a RepoDigest: current. Else the manifest for this platform decides: the local
    image's config (another platform was added or rebuilt), or the platform entry of the
    index this host pulled: platform_unchanged; anything else: drifted. Raises RegistryError
    when a document cannot be read or the index has no entry for this platform.
    """
    if head in local.digests:
        return Decision("current", head)
    new = document(head)
    new_platform = new.platform_digest(platform) if new.is_index else head
    if new_platform is None:
        raise RegistryError("no_platform", f"{head} has no manifest for {platform}")
    manifest = document(new_platform) if new_platform != head else new
    config = manifest.config_digest() or ""
    if config and config == local.image_id:
        return Decision("platform_unchanged", head, config)
    # Image stores that do not use the config digest as ID (containerd): compare the
    # platform entries of the old and the new index instead.
    for old_digest in sorted(local.digests):
        if old_digest == new_platform:
            return Decision("platform_unchanged", head, config)
        try:
            old = document(old_digest)
        except RegistryError:
            continue
        if old.is_index and old.platform_digest(platform) == new_platform:
            return Decision("platform_unchanged", head, config)
    return Decision("drifted", head, config)


def container_drift(status: str, tag_image_id: str, upstream_config: str,
                    container_image_id: str) -> int | None:
    """1 when the container does not run what the registry serves for its tag now.

    A current tag still leaves a container drifted when it runs an older image ID (pulled
    again, never recreated); None when the tag's state is unknown.
    """
    if status == "drifted":
        return 0 if upstream_config and upstream_config == container_image_id else 1
    if status in ("current", "platform_unchanged"):
        return 0 if container_image_id == tag_image_id else 1
    return None
