"""Signature presence for a digest: where to look, in the order OCI 1.1 clients publish.

1. The OCI referrers API, ``GET /v2/<name>/referrers/<digest>``.
2. Where the registry answers that with 404 (it has no referrers API, as Distribution 2.8):
   the referrers tag schema, ``GET /v2/<name>/manifests/sha256-<hex>``, the index cosign 3,
   notation and oras keep there instead. The 404 is remembered per registry for
   ``remember`` seconds (versions.interval): later digests go straight to the tag.
3. cosign's legacy tag, ``HEAD /v2/<name>/manifests/sha256-<hex>.sig``, which is never a
   referrer.

The first place with a signature ends the search. What counts as a signature is
``exporter.decisions.signatures``; nothing is verified.

Cost per unsigned digest, each time it is looked for (the caller looks once per start-up,
then once per versions.interval; a signature found is not looked for again): on a registry
with the referrers API one referrers GET and one ``.sig`` HEAD; on one without, one tag GET
and one ``.sig`` HEAD, plus one referrers GET per registry per versions.interval (the first
digest asks it while the others wait for its answer). Besides, a referrer whose descriptor
does not say what it is costs one manifest GET, the first time only (documents are kept by
digest), and at most ``MAX_OPENED`` (8) of them per digest.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

from exporter.decisions import signatures
from exporter.locks import KeyedLocks
from exporter.registry.client import RegistryClient
from exporter.registry.content import ContentCache
from exporter.registry.manifest import RegistryError

log = logging.getLogger(__name__)

# Answers that say "nothing usable here" rather than "could not ask".
_NOTHING = ("not_found", "bad_response")


class SignatureFinder:
    """Thread-safe; one per checker, shared by its threads."""

    def __init__(self, client: RegistryClient, content: ContentCache, remember: float) -> None:
        self.client = client
        self.content = content
        self.remember = remember
        self._api: dict[str, tuple[bool, float]] = {}  # registry -> (serves the API, when)
        self._probes = KeyedLocks()
        self._lock = threading.Lock()

    def signed(self, registry: str, repository: str, digest: str) -> bool:
        """A signature of ``digest`` exists. Raises RegistryError when that cannot be told
        (the registry failed, not merely had nothing)."""
        entries = self._referrers(registry, repository, digest)
        if entries and signatures.decide(
                entries, digest, lambda ref: self._open(registry, repository, ref)):
            return True
        try:
            self.client.head_digest(registry, repository, signatures.cosign_tag(digest))
        except RegistryError as exc:
            if exc.reason == "not_found":
                return False
            raise
        return True

    def _serves_api(self, registry: str) -> bool | None:
        """Whether the registry served the referrers API when last asked; None: not asked
        within ``remember``."""
        with self._lock:
            known = self._api.get(registry)
        if known is None or time.time() - known[1] > self.remember:
            return None
        return known[0]

    def _referrers(self, registry: str, repository: str,
                   digest: str) -> list[Mapping[str, Any]]:
        serves = self._serves_api(registry)
        if serves is None:
            # One digest finds out; the others wait for its answer instead of each asking.
            with self._probes.hold(registry):
                serves = self._serves_api(registry)
                if serves is None:
                    return self._ask_api(registry, repository, digest)
        if serves:
            return self._ask_api(registry, repository, digest)
        return self._tag_schema(registry, repository, digest)

    def _ask_api(self, registry: str, repository: str,
                 digest: str) -> list[Mapping[str, Any]]:
        entries = self.client.referrers(registry, repository, digest)
        with self._lock:
            self._api[registry] = (entries is not None, time.time())
        if entries is None:
            return self._tag_schema(registry, repository, digest)
        return entries

    def _tag_schema(self, registry: str, repository: str,
                    digest: str) -> list[Mapping[str, Any]]:
        # The client's Accept names the OCI index: Distribution 2.8 answers 404 without it.
        tag = signatures.referrers_tag(digest)
        try:
            index = self.client.get_manifest(registry, repository, tag)
            return signatures.referrers_index(index.media_type, index.document())
        except RegistryError as exc:
            if exc.reason not in _NOTHING:
                raise
            if exc.reason != "not_found":
                log.debug("%s/%s:%s is no referrers index: %s", registry, repository, tag, exc)
            return []

    def _open(self, registry: str, repository: str, digest: str) -> Mapping[str, Any] | None:
        try:
            return self.content.manifest(registry, repository, digest).document()
        except RegistryError as exc:
            if exc.reason in _NOTHING:  # listed but gone, or not a manifest
                return None
            raise
