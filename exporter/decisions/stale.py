"""Staleness: does the tag a container was created from now name other content here?

A pure function of what the engine lists, so it is tested without an engine.
"""

from __future__ import annotations

from exporter.snapshots import Image


def container_stale(container_image_id: str, container_manifest: str,
                    tag_image: Image | None) -> bool:
    """Whether the container's tag now names other content for this platform.

    The tag names no local image, or the container's own image ID: not stale. It names
    another image that holds the very manifest the container runs: not stale either; on
    the containerd image store the image ID is the index digest, so re-pulling an index
    that only gained or rebuilt another platform gives a new ID for the same content. Else
    stale. Nothing here reads the old image, which loses its tags and RepoDigests when the
    tag moves on (or vanishes from the list, containerd store before Docker 27.2).
    """
    if tag_image is None or tag_image.id == container_image_id:
        return False
    held = {tag_image.id, *(m.digest for m in tag_image.manifests)}
    return not (container_manifest and container_manifest in held)
