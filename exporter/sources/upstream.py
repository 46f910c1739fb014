"""The upstream loop: has the registry moved a local tag on, for this host's platform?

For each distinct (registry, repository, tag) among local images that came from a registry,
one HEAD per interval gives the digest the registry serves now; ``decisions.drift`` decides
what that means. A check that cannot decide is unknown, with a reason; it never reports
current and never clears drift-since.

Scheduling: every tick the loop hands the tags that are due to a bounded pool of workers,
fairly across registries: one registry never has more than ``registry_concurrency`` checks
in flight, so a slow registry cannot hold every worker, and a tick waits for checks at most
``PUBLISH_WAIT``: what was decided so far is published, the rest on a later tick. Whether
and when a request may go is the request policy's (``exporter.registry.policy``): a
registry in back-off refuses at once, and its tags are unknown until it may be asked again.

Local mode checks this host's tags (``DriftCheck``); fleet mode's central checker reads the
digest of the fleet's tags (``DigestCheck``), found by asking Prometheus.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace

import httpx

from exporter import backoff, reference
from exporter.config import Config
from exporter.decisions import drift, provenance
from exporter.registry import transport
from exporter.registry.client import RegistryClient
from exporter.registry.content import ContentCache
from exporter.registry.manifest import Manifest, Platform, RegistryError
from exporter.registry.policy import BLOCKING, MAX_BACKOFF, Counters, RequestPolicy
from exporter.registry.signatures import SignatureFinder
from exporter.snapshots import EngineSnapshot, Image, ImageManifest, TagState, UpstreamSnapshot
from exporter.sources.engine import Engine, EngineError, is_podman, uses_snapshotter
from exporter.sources.loop import Problems, Source, SourceError
from exporter.state import StateStore, Verdict
from exporter.status import remember
from exporter.values import redact_url

log = logging.getLogger(__name__)

MIN_BACKOFF = 30.0  # after a failed check of one tag, doubling up to the interval, or
# up to the request policy's MAX_BACKOFF when the registry itself failed: a registry that
# answers again is asked again within minutes, not after hours of doubling.
TICK = 60.0
PUBLISH_WAIT = 1.0  # a tick waits this long for checks before publishing what it has
BUSY_TICK = 0.5  # the loop's tick while checks are in flight
ENGINE_WAIT = 30.0
MAX_QUERY_BYTES = 64 * 1024 * 1024  # Prometheus's answer: a fleet's distinct tags
_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}


@dataclass(frozen=True)
class Target:
    """One tag to check."""

    image: str  # short form, e.g. "busybox:latest"
    ref: reference.Reference
    image_id: str
    local_digests: frozenset[str]
    created: float | None = None  # the local image's creation time
    manifests: tuple[ImageManifest, ...] = ()  # its platform manifests (containerd store)

    @property
    def registry(self) -> str:
        return self.ref.domain


@dataclass(frozen=True)
class Outcome:
    """What one check found."""

    status: str
    reason: str = ""
    digest: str = ""
    config: str = ""
    signed: bool | None = None
    created: float | None = None
    retry_at: float | None = None  # the registry may be asked again then (time.monotonic)
    manifest: str = ""  # upstream's manifest for this platform


def local_digests(image: Image, name: str) -> frozenset[str]:
    """The image's RepoDigests for the repository ``name`` (fully qualified)."""
    out = set()
    for entry in image.repo_digests:
        repo, _, digest = entry.partition("@")
        try:
            if reference.parse(repo, default_tag=None).name == name:
                out.add(digest)
        except reference.ReferenceError:
            continue
    return frozenset(out)


def local_tags(snapshot: EngineSnapshot, include: Iterable[re.Pattern[str]],
               exclude: Iterable[re.Pattern[str]]
               ) -> Iterator[tuple[Image, reference.Reference, str]]:
    """(image, reference, short form) of every local tag the filters let through."""
    include, exclude = list(include), list(exclude)
    for image in snapshot.images:
        for tag in image.tags:
            try:
                ref = reference.parse(tag)
            except reference.ReferenceError:
                continue
            short = ref.familiar()
            if include and not any(p.search(short) for p in include):
                continue
            if not any(p.search(short) for p in exclude):
                yield image, ref, short


def targets(snapshot: EngineSnapshot, include: Iterable[re.Pattern[str]],
            exclude: Iterable[re.Pattern[str]]) -> list[Target]:
    """Every local tag that is not filtered out, with its local digests."""
    opted_out: dict[str, bool] = {}
    for c in snapshot.containers:
        opted_out[c.image] = opted_out.get(c.image, True) and c.drift_opt_out
    return [Target(short, ref, image.id, local_digests(image, ref.name), image.created,
                   image.manifests)
            for image, ref, short in local_tags(snapshot, include, exclude)
            if not opted_out.get(short)]


@dataclass
class EngineFacts:
    """What the engine says about registries and its platform; read at most once per
    ``interval``. Shared by the drift and versions loops and the registry client."""

    engine: Engine | None
    interval: float
    insecure_registries: tuple[str, ...] = ()
    platform_override: str = ""
    # The image store (decisions.provenance) when known without asking the engine (no
    # engine: benchmarks, tests); else it is read from the engine.
    store_override: str = ""
    _platform: Platform = field(default_factory=lambda: Platform("linux", "amd64"))
    _cidrs: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = (
        ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
    _hosts: frozenset[str] = frozenset()
    _store: str = ""  # decisions.provenance's store kind; "" until read
    _read: bool = False  # read successfully at least once
    _next: float = 0.0  # time.monotonic() of the next read
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def refresh(self) -> None:
        """Read the engine's facts when due. Once they were read, a caller never waits for
        another's read (a hung engine must not hold up registry checks): it uses what is
        known. A failed read is tried again after a minute (or the interval)."""
        if self.engine is None or time.monotonic() < self._next:
            return
        if not self._lock.acquire(blocking=not self._read):
            return
        try:
            if time.monotonic() < self._next:
                return
            try:
                info = self.engine.info()
                version = self.engine.version()
            except EngineError as exc:
                log.debug("cannot read registry settings from the engine: %s", exc)
                self._next = time.monotonic() + min(60.0, self.interval)
                return  # keep what was known
            registry_config = info.get("RegistryConfig") or {}
            cidrs = []
            for cidr in registry_config.get("InsecureRegistryCIDRs") or []:
                try:
                    cidrs.append(ipaddress.ip_network(str(cidr), strict=False))
                except ValueError:
                    continue
            self._cidrs = tuple(cidrs)
            self._hosts = frozenset(
                name for name, index in (registry_config.get("IndexConfigs") or {}).items()
                if isinstance(index, dict) and index.get("Secure") is False)
            arch = str(version.get("Arch") or "amd64")
            self._platform = Platform(str(version.get("Os") or "linux"), _ARCH.get(arch, arch))
            self._store = provenance.PODMAN if is_podman(version) else (
                provenance.CONTAINERD if uses_snapshotter(info) else provenance.CLASSIC)
            self._read, self._next = True, time.monotonic() + self.interval
        finally:
            self._lock.release()

    def platform(self) -> Platform:
        """This host's platform: the configured one, else the engine's."""
        if self.platform_override:
            return Platform.parse(self.platform_override)
        self.refresh()
        return self._platform

    def store(self) -> str:
        """The engine's image store (classic, containerd or podman); "" while not read.
        On the classic store an image ID is its config digest, which spares drift checks
        the old index (``decisions.drift``)."""
        if self.store_override:
            return self.store_override
        self.refresh()
        return self._store

    def insecure(self, registry: str) -> bool:
        """Plain HTTP allowed: as the engine decides it, plus the configured list."""
        if registry in self.insecure_registries or registry in self._hosts:
            return True
        host = registry.rsplit(":", 1)[0] if not registry.endswith("]") else registry
        host = host.strip("[]")
        if host == "localhost":
            host = "127.0.0.1"
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(ip in cidr for cidr in self._cidrs)


class DriftCheck:
    """Local mode: the tag's drift for this platform, its signature and its build time.

    Round trips, for a tag whose digest moved to a multi-arch index, on the classic image
    store (each arrow one request after another):

        HEAD tag -> GET index -> GET platform manifest -> GET config blob (build time)
                                 + signature look-up: referrers (or the referrers tag)
                                   and cosign's .sig HEAD, at the same time

    The decision takes three round trips (the config digest decides: it is the local image
    ID), the whole check four; six requests. The signature look-up needs only the new
    digest, but starts with the decision's last request rather than right after the HEAD:
    that costs no round trip (the chain to the build time is longer), and a registry that
    fails a signature request (5xx, timeout) is put in back-off by the request policy,
    which would refuse the decision's remaining requests. Where more documents may follow
    (containerd store, a single manifest) it starts once the decision is made. The extra
    requests run on a small pool this check owns; every request still goes through the one
    request policy, which admits them.
    """

    def __init__(self, client: RegistryClient, content: ContentCache, facts: EngineFacts,
                 signature_interval: float, workers: int = 4) -> None:
        self.client = client
        self.content = content
        self.facts = facts
        self.signature_interval = signature_interval
        self.signatures = SignatureFinder(client, content, signature_interval)
        self._signed: dict[str, tuple[bool, float]] = {}  # digest -> (signed, when looked)
        self._looking: dict[str, Future[bool]] = {}  # digest -> the look-up under way
        self._lock = threading.Lock()
        # Leaf tasks only (a signature request, or a chain of them): a task never waits for
        # another task of this pool, so a full pool delays, never deadlocks.
        self._pool = ThreadPoolExecutor(max(2, workers), thread_name_prefix="drift-extras")

    def __call__(self, t: Target) -> Outcome:
        if not t.local_digests:
            return Outcome("unknown", "no_repo_digest")
        assert t.ref.tag is not None
        head = self.client.head_digest(t.registry, t.ref.path, t.ref.tag)
        platform = self.facts.platform()
        local = drift.Local(t.image_id, t.local_digests,
                            drift.platform_manifest(t.manifests, platform), self.facts.store())
        signature: list[Future[bool] | None] = []

        def document(digest: str) -> Manifest:
            if not signature and drift.last_read(local, head, digest):
                signature.append(self._signature(t, head))
            return self.content.manifest(t.registry, t.ref.path, digest)

        decision = drift.decide(local, head, platform, document)
        if not signature:
            signature.append(self._signature(t, head))
        created = t.created
        if decision.status == "drifted":
            created = self._created(t, decision.config)
        return Outcome(decision.status, "", decision.digest, decision.config,
                       self._wait(t, head, signature[0]), created, manifest=decision.manifest)

    def _signature(self, t: Target, digest: str) -> Future[bool] | None:
        """Start looking for a signature of ``digest``, unless one was found, or none was
        within ``signature_interval``: then None (the answer is known). Tags that name one
        image are often checked at the same time: they share one look-up."""
        with self._lock:
            known = self._signed.get(digest)
            if known is not None and (known[0] or time.time() - known[1] <=
                                      self.signature_interval):
                return None
            pending = self._looking.get(digest)
            if pending is not None:
                return pending
            pending = self._looking[digest] = self.signatures.start(
                self._pool, t.registry, t.ref.path, digest)
        pending.add_done_callback(lambda done: self._looked(digest, done))
        return pending

    def _looked(self, digest: str, done: Future[bool]) -> None:
        """A look-up ended: what it could tell is kept, in the same step as it stops being
        the look-up under way, so that no check in between asks again."""
        signed = None if done.cancelled() or done.exception() is not None else done.result()
        with self._lock:
            if self._looking.get(digest) is done:
                del self._looking[digest]
            if signed is not None:
                self._signed[digest] = (signed, time.time())

    def _wait(self, t: Target, digest: str, pending: Future[bool] | None) -> bool | None:
        """Whether ``digest`` is signed: the look-up's answer; None when it could not tell.
        Every task ends within the request deadlines, so this wait does too."""
        if pending is None:
            with self._lock:
                known = self._signed.get(digest)
            return known[0] if known is not None else None
        try:
            return pending.result()
        except (RegistryError, CancelledError) as exc:
            # The drift state is decided; what could not be read stays unknown (absent).
            log.info("signature of %s not read: %s", t.image, exc)
            return None
        except Exception:  # a bug in the look-up: said loudly, the decision still stands
            log.exception("looking for a signature of %s failed", t.image)
            return None

    def _created(self, t: Target, config: str) -> float | None:
        """When upstream's image for this platform was built, from its config blob (read
        once per digest). A current tag's image is the local one, which costs nothing."""
        if not config:
            return None
        try:
            return self.content.created(t.registry, t.ref.path, config)
        except RegistryError as exc:
            log.info("build time of %s not read: %s", t.image, exc)
            return None

    def keep_only(self, digests: set[str]) -> None:
        """Forget signatures of digests no tag names any more."""
        with self._lock:
            for digest in set(self._signed) - digests:
                del self._signed[digest]

    def close(self) -> None:
        """Stop the extra look-ups: queued ones are cancelled (their checks say the
        signature is unknown), running ones end with their requests."""
        self._pool.shutdown(wait=False, cancel_futures=True)


class DigestCheck:
    """Fleet mode: the digest the tag names upstream; nothing is compared."""

    def __init__(self, client: RegistryClient) -> None:
        self.client = client

    def __call__(self, t: Target) -> Outcome:
        assert t.ref.tag is not None
        return Outcome("known", "", self.client.head_digest(t.registry, t.ref.path, t.ref.tag))

    def keep_only(self, digests: set[str]) -> None:
        return None


def local_record(store: StateStore) -> Callable[[TagState], TagState]:
    """Local mode: drift-since and the last decided state are kept in the state store, so
    they survive restarts, also one while the registry is unreachable."""

    def record(state: TagState) -> TagState:
        if state.status == "drifted":
            store.set_drift_since(state.image, time.time())
        elif state.status in ("current", "platform_unchanged"):
            store.clear_drift(state.image)
        if state.status != "unknown" and state.checked is not None:
            store.put_verdict(state.image, Verdict(
                state.image_id, state.status, state.checked, state.upstream_digest,
                state.upstream_config, state.upstream_manifest))
        elif not state.decided and state.reason != "no_repo_digest":
            kept = store.verdict(state.image)
            if kept is not None and kept.image_id == state.image_id:
                state = replace(state, decided=kept.status, checked=kept.checked,
                                upstream_digest=state.upstream_digest or kept.upstream_digest,
                                upstream_config=state.upstream_config or kept.upstream_config,
                                upstream_manifest=state.upstream_manifest
                                or kept.upstream_manifest)
        return replace(state, drift_since=store.drift_since(state.image))

    return record


def central_record(store: StateStore) -> Callable[[TagState], TagState]:
    """Fleet mode: when the tag's digest last changed upstream, kept in the state store."""

    def record(state: TagState) -> TagState:
        if state.status != "unknown":
            known = store.tag_digest(state.image)
            if known is None or known[0] != state.upstream_digest:
                store.set_tag_digest(state.image, state.upstream_digest, time.time())
        known = store.tag_digest(state.image)
        return replace(state, changed=known[1] if known else None)

    return record


class Checks:
    """Schedules checks: what is due, fairly across registries, never waiting on a slow one.

    ``discover`` lists the tags to check, ``check`` checks one (in a worker), ``record``
    completes a state with what the mode keeps (drift-since, last change).
    """

    def __init__(self, discover: Callable[[], list[Target]],
                 check: DriftCheck | DigestCheck, record: Callable[[TagState], TagState],
                 counters: Callable[[], Counters], interval: float, concurrency: int,
                 per_registry: int, forget: Callable[[str], None] = lambda image: None,
                 flush: Callable[[], None] = lambda: None) -> None:
        self.discover = discover
        self.check = check
        self.record = record
        self.counters = counters
        self.interval = interval
        self.concurrency = concurrency
        self.per_registry = per_registry
        self.forget = forget
        self.flush = flush  # writes what ``record`` kept (one commit, not one a tag)
        self.states: dict[str, TagState] = {}
        self._due: dict[str, float] = {}
        self._failures: dict[str, int] = {}
        self._pending: dict[str, deque[Target]] = {}
        self._running: dict[str, int] = {}  # registry -> checks in flight
        self._in_flight: set[str] = set()
        self._wanted: set[str] = set()
        self._lock = threading.Condition()
        self._pool = ThreadPoolExecutor(concurrency, thread_name_prefix="upstream")
        self._published: UpstreamSnapshot | None = None
        self._changes = 0
        self._published_changes = -1
        self._closed = False

    def run(self) -> UpstreamSnapshot:
        current = self.discover()
        now = time.monotonic()  # due times and retry_at are on the monotonic clock
        wanted = {t.image for t in current}
        with self._lock:
            self._wanted = wanted
            for gone in set(self.states) - wanted:
                del self.states[gone]
                self._due.pop(gone, None)
                self._failures.pop(gone, None)
                self.forget(gone)
                self._changes += 1
            self._pending = {}
            for t in current:
                state = self.states.get(t.image)
                if t.image in self._in_flight:
                    continue
                if state is None or state.image_id != t.image_id or \
                        self._due.get(t.image, 0.0) <= now:
                    self._pending.setdefault(t.registry, deque()).append(t)
            self._dispatch()
            deadline = time.monotonic() + PUBLISH_WAIT
            while self._in_flight and (left := deadline - time.monotonic()) > 0:
                self._lock.wait(left)
            self.check.keep_only({s.upstream_digest for s in self.states.values()})
        self.flush()
        return self.snapshot()

    def busy(self) -> bool:
        """Checks are in flight or waiting for a worker."""
        with self._lock:
            return bool(self._in_flight or any(self._pending.values()))

    def cycle(self) -> UpstreamSnapshot:
        """One whole cycle: every due tag is checked before it returns (``report --check``;
        the loop itself never waits like this)."""
        self.run()
        with self._lock:
            while self._in_flight or any(self._pending.values()):
                self._lock.wait(1.0)
        self.flush()
        return self.snapshot()

    def _dispatch(self) -> None:
        """Start a worker for each pending check both limits admit. Called with the lock
        held, by the loop; a worker that ends a check takes the next itself."""
        while (t := self._take()) is not None:
            self._pool.submit(self._work, t)

    def _take(self) -> Target | None:
        """The next pending check, round robin over registries, within both limits, marked
        in flight; None when there is none. Called with the lock held."""
        if self._closed or len(self._in_flight) >= self.concurrency:
            return None
        for registry in list(self._pending):
            queue = self._pending.pop(registry)
            if not queue:
                continue
            if self._running.get(registry, 0) >= self.per_registry:
                self._pending[registry] = queue
                continue
            t = queue.popleft()
            if queue:
                self._pending[registry] = queue  # last in the round now
            self._running[registry] = self._running.get(registry, 0) + 1
            self._in_flight.add(t.image)
            return t
        return None

    def _work(self, t: Target | None) -> None:
        """Checks one tag after another while there are some: a worker takes the next check
        itself, so a check costs no hand-off to another thread and no wake-up of the loop,
        which is woken when nothing is in flight any more."""
        while t is not None:
            self._run_one(t)
            with self._lock:
                self._in_flight.discard(t.image)
                self._running[t.registry] -= 1
                t = self._take()
                if not self._in_flight:
                    self._lock.notify_all()

    def _run_one(self, t: Target) -> None:
        try:
            outcome = self.check(t)
        except RegistryError as exc:
            outcome = Outcome("unknown", exc.reason, retry_at=exc.retry_at)
        except Exception:  # a bug must not stop the other checks
            log.exception("checking %s failed", t.image)
            outcome = Outcome("unknown", "error")
        try:
            self._record(t, outcome)
        except Exception:
            log.exception("recording the check of %s failed", t.image)

    def _record(self, t: Target, outcome: Outcome) -> None:
        now, checked = time.monotonic(), time.time()
        known = outcome.status != "unknown"
        with self._lock:
            previous = self.states.get(t.image)
        same_image = previous is not None and previous.image_id == t.image_id
        state = TagState(
            image=t.image, image_id=t.image_id, status=outcome.status, reason=outcome.reason,
            upstream_digest=outcome.digest or (previous.upstream_digest if previous else ""),
            upstream_config=outcome.config if known else (
                previous.upstream_config if previous else ""),
            checked=checked if known else (previous.checked if previous else None),
            signed=outcome.signed if known else (previous.signed if previous else None),
            created=outcome.created if known else (previous.created if previous else None),
            upstream_manifest=outcome.manifest if known else (
                previous.upstream_manifest if previous else ""),
            decided=outcome.status if known else (
                previous.decided if previous and same_image else ""))
        with self._lock:
            if t.image not in self._wanted:
                return  # no longer a local tag: forgotten while it was checked
        state = self.record(state)
        with self._lock:
            self.states[t.image] = state
            self._changes += 1
            if known or outcome.reason == "no_repo_digest":
                self._failures.pop(t.image, None)
                wait = backoff.jittered(self.interval, 0.9, 1.0)
            elif outcome.retry_at is not None:
                wait = max(0.0, outcome.retry_at - now)
            else:
                failures = self._failures[t.image] = self._failures.get(t.image, 0) + 1
                cap = min(self.interval, MAX_BACKOFF) if outcome.reason in BLOCKING \
                    else self.interval
                wait = backoff.delay(failures, MIN_BACKOFF, cap)
            self._due[t.image] = now + wait

    def snapshot(self) -> UpstreamSnapshot:
        """The states and counters, as one object that changes only when they do (so the
        exposition's cache keeps its text while nothing happened)."""
        counters = self.counters()
        with self._lock:
            last = self._published
            if last is not None and self._published_changes == self._changes and \
                    (last.ratelimits, last.requests, last.digest_fallbacks) == (
                        counters.ratelimits, counters.requests, counters.digest_fallbacks):
                return last
            states = tuple(sorted(self.states.values(), key=lambda s: s.image))
            self._published = UpstreamSnapshot(states, counters.ratelimits, counters.requests,
                                               counters.digest_fallbacks)
            self._published_changes = self._changes
            return self._published

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self._pool.shutdown(wait=False, cancel_futures=True)


class LocalTargets:
    """This host's tags, from the engine loop's latest snapshot."""

    def __init__(self, config: Config, engine: Source[EngineSnapshot],
                 facts: EngineFacts) -> None:
        self.engine = engine
        self.facts = facts
        self.include = [re.compile(p) for p in config.upstream_include]
        self.exclude = [re.compile(p) for p in config.upstream_exclude]
        self._cached: tuple[EngineSnapshot | None, list[Target]] = (None, [])

    def __call__(self) -> list[Target]:
        if not self.engine.ready.wait(ENGINE_WAIT) or self.engine.snapshot is None:
            raise SourceError("waiting for the engine's first successful read", quiet=True)
        self.facts.refresh()
        snapshot = self.engine.snapshot
        if self._cached[0] is not snapshot:
            self._cached = (snapshot, targets(snapshot, self.include, self.exclude))
        return self._cached[1]


class FleetTargets:
    """Fleet mode: the tags every host has, from Prometheus, and the configured ones; only
    those whose hash falls in this checker's shard."""

    QUERY = 'count by (image) (docker_image_info{digest!=""})'

    def __init__(self, config: Config) -> None:
        self.config = config
        index, _, count = (config.upstream_shard or "0/1").partition("/")
        self.shard = (int(index), int(count))
        self.include = [re.compile(p) for p in config.upstream_include]
        self.exclude = [re.compile(p) for p in config.upstream_exclude]
        self.http = transport.client(config.upstream_timeout)
        # The fleet's tags change as hosts pull; the loop ticks every few seconds. Asking
        # Prometheus once a minute (or interval) is plenty.
        self.fresh_for = min(60.0, config.upstream_interval)
        self._known: tuple[float, list[str]] | None = None  # (time.monotonic(), refs)

    def discover(self) -> list[str]:
        if self._known and time.monotonic() - self._known[0] < self.fresh_for:
            return self._known[1]
        refs = set(self.config.upstream_references)
        url = self.config.upstream_prometheus_url
        if url:
            try:
                with transport.deadline(self.config.upstream_timeout):
                    r = transport.fetch(self.http, "GET", f"{url}/api/v1/query",
                                        MAX_QUERY_BYTES, params={"query": self.QUERY})
                r.raise_for_status()
                result = r.json()["data"]["result"]
            except (httpx.HTTPError, transport.TooLarge, ValueError, KeyError, TypeError,
                    RecursionError) as exc:
                raise SourceError(f"{redact_url(url)}: query the fleet's tags: "
                                  f"{transport.why(exc)}") from None
            refs.update(str(item.get("metric", {}).get("image", "")) for item in result
                        if isinstance(item, dict))
        found = sorted(r for r in refs if r)
        self._known = (time.monotonic(), found)
        return found

    def __call__(self) -> list[Target]:
        out = []
        index, count = self.shard
        for text in self.discover():
            try:
                ref = reference.parse(text)
            except reference.ReferenceError:
                continue
            short = ref.familiar()
            if ref.tag is None or zlib.crc32(short.encode()) % count != index:
                continue
            if self.include and not any(p.search(short) for p in self.include):
                continue
            if any(p.search(short) for p in self.exclude):
                continue
            out.append(Target(short, ref, "", frozenset({"fleet"})))
        return out

    def close(self) -> None:
        self.http.close()


@dataclass
class Upstream:
    """What the upstream loop is made of; the versions loop shares its client, documents,
    state store and engine facts."""

    source: Source[UpstreamSnapshot]
    checks: Checks
    client: RegistryClient
    content: ContentCache
    store: StateStore
    facts: EngineFacts
    close: Callable[[], None]  # everything it opened: pool, connections, the state store


def request_policy(config: Config) -> RequestPolicy:
    """The one request policy: every registry, Docker Hub API and Harbor request obeys it."""
    return RequestPolicy(config.upstream_concurrency, config.upstream_registry_concurrency,
                         config.upstream_timeout)


def make_source(config: Config, engine_source: Source[EngineSnapshot],
                problems: Problems | None = None, policy: RequestPolicy | None = None,
                store: StateStore | None = None) -> Upstream:
    """The upstream source: wakes every few seconds and checks what is due."""
    from exporter.registry.credentials import CredentialStore, default_docker_config
    from exporter.state import default_path

    store = store or StateStore(config.state_path or default_path())
    central = config.upstream_mode == "central"
    cri = bool(config.cri_endpoint)
    engine = None if central or cri else Engine(config.docker_host, config.docker_timeout)
    # A CRI node has no /info: its platform is this machine's, its image IDs are config
    # digests as on the classic store, and plain-HTTP registries are the configured ones.
    machine = os.uname().machine
    facts = EngineFacts(engine, config.upstream_interval, config.upstream_insecure_registries,
                        config.upstream_platform or (
                            f"linux/{_ARCH.get(machine, machine)}" if cri else ""),
                        provenance.CLASSIC if cri else "")
    creds = CredentialStore(dict(config.registries),
                            config.docker_config or default_docker_config())
    policy = policy or request_policy(config)
    client = RegistryClient(creds, facts.insecure, policy,
                            fresh_for=min(60.0, config.upstream_interval / 2))
    content = ContentCache(client, store)
    fleet: FleetTargets | None = None
    local: DriftCheck | None = None
    if central:
        fleet = FleetTargets(config)
        checks = Checks(fleet, DigestCheck(client), central_record(store), client.counters,
                        config.upstream_interval, config.upstream_concurrency,
                        config.upstream_registry_concurrency, forget=store.forget_tag,
                        flush=store.flush)
    else:
        local = DriftCheck(client, content, facts, config.versions_interval,
                           config.upstream_concurrency)
        checks = Checks(LocalTargets(config, engine_source, facts), local,
                        local_record(store), client.counters, config.upstream_interval,
                        config.upstream_concurrency, config.upstream_registry_concurrency,
                        forget=store.forget_upstream, flush=store.flush)

    def close() -> None:
        checks.close()
        if local is not None:
            local.close()
        client.close()
        if fleet is not None:
            fleet.close()
        if engine is not None:
            engine.close()
        store.close()

    saved: list[UpstreamSnapshot | None] = [None]

    tick = min(config.upstream_interval, 5.0)

    def read() -> UpstreamSnapshot:
        """A tick; in local mode what it decided is also kept for ``report`` (whenever it
        changed: the snapshot object stays the same while nothing does). While checks are
        still in flight the next tick comes after ``BUSY_TICK``, so what they decide is
        published a second or two later, not a whole tick (a cycle of 1,000 tags at 20 ms
        took 7.5 s from start to every tag shown with 5 s ticks)."""
        snapshot = checks.run()
        if not central and snapshot is not saved[0]:
            saved[0] = remember(store, "upstream", snapshot)
        source.interval = min(tick, BUSY_TICK) if checks.busy() else tick
        return snapshot

    source = Source("upstream", read, tick, close, problems)
    return Upstream(source, checks, client, content, store, facts, close)
