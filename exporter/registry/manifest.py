"""What registries serve: manifests, indexes and platforms, and the error a check ends in."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
ACCEPT = ", ".join((OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST))
DIGEST = re.compile(r"sha256:[a-f0-9]{64}")


class RegistryError(Exception):
    """A check could not be decided; ``reason`` becomes the unknown state's label."""

    def __init__(self, reason: str, detail: str = "", retry_after: float | None = None,
                 retry_at: float | None = None) -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.retry_after = retry_after  # what the registry asked for (Retry-After), seconds
        self.retry_at = retry_at  # when the request policy lets it be asked again (monotonic)


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)

    @classmethod
    def parse(cls, text: str) -> Platform:
        parts = text.split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise ValueError(f"{text!r} is not a platform: use os/arch or os/arch/variant")
        return cls(*parts)

    def matches(self, entry: Any) -> bool:
        if not isinstance(entry, dict):
            return False
        if entry.get("os") != self.os or entry.get("architecture") != self.architecture:
            return False
        variant = entry.get("variant") or ""
        return not (self.variant and variant and variant != self.variant)


@dataclass(frozen=True)
class Manifest:
    digest: str
    media_type: str
    body: bytes

    def document(self) -> dict[str, Any]:
        try:
            doc = json.loads(self.body)
        except (ValueError, UnicodeDecodeError):
            raise RegistryError("bad_response", "manifest is not JSON") from None
        if not isinstance(doc, dict):
            raise RegistryError("bad_response", "manifest is not a JSON object")
        return doc

    @property
    def is_index(self) -> bool:
        if self.media_type in INDEX_TYPES:
            return True
        if self.media_type in MANIFEST_TYPES:
            return False
        return isinstance(self.document().get("manifests"), list)

    def platform_digest(self, platform: Platform) -> str | None:
        """The digest of the index entry for ``platform`` (None when it has none)."""
        for entry in self.document().get("manifests") or []:
            if isinstance(entry, dict) and platform.matches(entry.get("platform")):
                digest = entry.get("digest")
                if isinstance(digest, str) and DIGEST.fullmatch(digest):
                    return digest
        return None

    def config_digest(self) -> str | None:
        config = self.document().get("config")
        digest = config.get("digest") if isinstance(config, dict) else None
        return digest if isinstance(digest, str) else None
