"""Content-addressed registry documents, fetched once: manifests and image configs.

A digest names its bytes for ever, so a manifest or config read once is kept in the state
store and never asked for again; drift checks and version checks share them.
"""

from __future__ import annotations

import json
from typing import Any

from exporter.locks import KeyedLocks
from exporter.registry.client import RegistryClient
from exporter.registry.manifest import Manifest, Platform, RegistryError
from exporter.state import StateStore
from exporter.timestamps import parse_timestamp

CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
MAX_CONFIG_BYTES = 1024 * 1024


class ContentCache:
    def __init__(self, client: RegistryClient, store: StateStore) -> None:
        self.client = client
        self.store = store
        # Checks wanting the same digest at once wait for one fetch.
        self._once = KeyedLocks()

    def manifest(self, registry: str, repository: str, digest: str) -> Manifest:
        """A manifest by digest, fetched once however many checks want it at the same time."""
        with self._once.hold(digest):
            cached = self.store.document(digest)
            if cached:
                return Manifest(digest, cached[0], cached[1])
            manifest = self.client.get_manifest(registry, repository, digest)
            self.store.put_document(digest, manifest.media_type, manifest.body)
            return manifest

    def config(self, registry: str, repository: str, digest: str) -> dict[str, Any]:
        """An image config blob by digest (os, architecture, created, ...)."""
        with self._once.hold(digest):
            cached = self.store.document(digest)
            if cached:
                body = cached[1]
            else:
                body = self.client.get_blob(registry, repository, digest, MAX_CONFIG_BYTES)
                self.store.put_document(digest, CONFIG_TYPE, body)
        try:
            doc = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise RegistryError("bad_response", "image config is not JSON") from None
        if not isinstance(doc, dict):
            raise RegistryError("bad_response", "image config is not a JSON object")
        return doc

    def for_platform(self, registry: str, repository: str, digest: str,
                     platform: Platform) -> Manifest | None:
        """The image manifest ``digest`` resolves to on ``platform``; None when it has none.

        An index says the platform of each entry; a single manifest only in its config.
        """
        manifest = self.manifest(registry, repository, digest)
        if manifest.is_index:
            entry = manifest.platform_digest(platform)
            return None if entry is None else self.manifest(registry, repository, entry)
        config = manifest.config_digest()
        if config is None:
            return None
        return manifest if platform.matches(self.config(registry, repository, config)) else None

    def created(self, registry: str, repository: str, config_digest: str) -> float | None:
        """The build time an image config records."""
        return parse_timestamp(self.config(registry, repository, config_digest).get("created"))
