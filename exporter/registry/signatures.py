"""Signature presence for a digest: where to look, in the order OCI 1.1 clients publish.

1. The OCI referrers API, ``GET /v2/<name>/referrers/<digest>``.
2. Where the registry answers that with 404 (it has no referrers API, as Distribution 2.8):
   the referrers tag schema, ``GET /v2/<name>/manifests/sha256-<hex>``, the index cosign 3,
   notation and oras keep there instead. The 404 is remembered per registry for
   ``remember`` seconds (versions.interval): later digests go straight to the tag.
3. cosign's legacy tag, ``HEAD /v2/<name>/manifests/sha256-<hex>.sig``, which is never a
   referrer.

``signed`` looks in that order and stops at the first place with a signature. ``start``
(the drift check's way) asks 1-2 and 3 at the same time, on the caller's thread pool: 3
waits for nothing, so the look-up takes one round trip instead of two (two instead of three
for the first digest of a registry without the referrers API: the 404, then the tag). The
trade: the ``.sig`` HEAD goes out even when the referrers name a signature, one request
more per signed digest, once (a signature found is not looked for again). What counts as a
signature is ``exporter.decisions.signatures``; nothing is verified.

Cost per digest, each time it is looked for (the caller looks once per start-up, then once
per versions.interval; a signature found is not looked for again):

- on a registry with the referrers API: one referrers GET and one ``.sig`` HEAD;
- on one without: one referrers-tag GET and one ``.sig`` HEAD, plus one referrers GET (the
  404) per registry per versions.interval (the first digest asks it while the others wait
  for its answer);
- with ``signed``, a digest whose referrers name a signature costs no ``.sig`` HEAD;
- a referrer whose descriptor does not say what it is costs one manifest GET (a round trip
  more), the first time only (documents are kept by digest), and at most ``MAX_OPENED``
  (8) of them per digest.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import CancelledError, Executor, Future
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
        return self.referred(registry, repository, digest) or \
            self.legacy(registry, repository, digest)

    def start(self, pool: Executor, registry: str, repository: str,
              digest: str) -> Future[bool]:
        """``signed``, with the referrers (1, 2) and cosign's tag (3) asked at the same time
        on ``pool``. The future is True as soon as either finds a signature, False when
        both found none, and fails (RegistryError) when neither found one and one of them
        could not tell. Both run as tasks of their own that wait for nothing but their
        requests (each within the request policy's deadline), so the future always ends;
        a task the pool cancels (shut down) ends it as well."""
        out: Future[bool] = Future()
        lock = threading.Lock()
        tasks = [_submit(pool, self.referred, registry, repository, digest),
                 _submit(pool, self.legacy, registry, repository, digest)]

        def settle(_: Future[bool]) -> None:
            with lock:
                if out.done():
                    return
                done = [t for t in tasks if t.done()]
                errors = [_error(t) for t in done]
                if any(e is None and t.result() for t, e in zip(done, errors, strict=True)):
                    out.set_result(True)
                elif len(done) == len(tasks):
                    failed = [e for e in errors if e is not None]
                    if failed:
                        out.set_exception(failed[0])
                    else:
                        out.set_result(False)

        for task in tasks:
            task.add_done_callback(settle)
        return out

    def referred(self, registry: str, repository: str, digest: str) -> bool:
        """A referrer of ``digest`` (the API, else the referrers tag) is a signature."""
        entries = self._referrers(registry, repository, digest)
        return bool(entries) and signatures.decide(
            entries, digest, lambda ref: self._open(registry, repository, ref))

    def legacy(self, registry: str, repository: str, digest: str) -> bool:
        """cosign's ``sha256-<hex>.sig`` tag exists: one HEAD."""
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


def _submit(pool: Executor, call: Callable[[str, str, str], bool], registry: str,
            repository: str, digest: str) -> Future[bool]:
    try:
        return pool.submit(call, registry, repository, digest)
    except RuntimeError:  # the pool is shut down: the exporter is stopping
        failed: Future[bool] = Future()
        failed.set_exception(RegistryError("error", "signature look-up stopped"))
        return failed


def _error(task: Future[bool]) -> BaseException | None:
    """What a finished task raised (a cancelled one: that it was cancelled)."""
    try:
        return task.exception(timeout=0)
    except CancelledError:
        return RegistryError("error", "signature look-up cancelled")
