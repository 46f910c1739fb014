"""Upstream drift: has the registry moved a local tag on, for this host's platform?

For each distinct (registry, repository, tag) among local images that came from a registry,
one HEAD per interval gives the digest the registry serves now. Equal to one of the image's
RepoDigests for that repository: current. Otherwise the new manifest is fetched by digest
(once: documents are content-addressed and cached) to see whether the entry for this
platform still has the local image's config (platform_unchanged: another platform was added
or rebuilt) or not (drifted). A check that cannot decide is unknown, with a reason; it never
reports current and never clears drift-since.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import re
import threading
import time
import zlib
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import httpx

from exporter import backoff, reference
from exporter.config import Config
from exporter.decisions import drift
from exporter.registry.client import RegistryClient
from exporter.registry.content import ContentCache
from exporter.registry.manifest import Platform, RegistryError
from exporter.snapshots import EngineSnapshot, Image, ImageManifest, TagState, UpstreamSnapshot
from exporter.sources.engine import Engine, EngineError
from exporter.sources.loop import Source
from exporter.state import StateStore

log = logging.getLogger(__name__)

# Reasons after which the registry as a whole is left alone for a while.
REGISTRY_FAILURES = frozenset({"rate_limited", "timeout", "unreachable", "server_error",
                               "tls_error", "token_error"})
MIN_BACKOFF = 30.0
MAX_BACKOFF = 3600.0
TICK = 60.0
ENGINE_WAIT = 30.0
_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}


@dataclass(frozen=True)
class Target:
    """One local tag to check."""

    image: str  # short form, e.g. "busybox:latest"
    ref: reference.Reference
    image_id: str
    local_digests: frozenset[str]
    created: float | None = None  # the local image's creation time
    manifests: tuple[ImageManifest, ...] = ()  # its platform manifests (containerd store)


@dataclass
class _RegistryHealth:
    failures: int = 0
    blocked_until: float = 0.0  # time.time()
    reason: str = ""


@dataclass
class EngineFacts:
    """What the engine says about registries and its platform; refreshed once per interval."""

    platform: Platform = field(default_factory=lambda: Platform("linux", "amd64"))
    insecure_cidrs: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = (
        ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
    insecure_hosts: frozenset[str] = frozenset()
    read_at: float = 0.0


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


class UpstreamChecker:
    """Runs checks that are due; called every tick by the 'upstream' source loop."""

    def __init__(self, config: Config, engine_source: Source[EngineSnapshot], engine: Engine,
                 client: RegistryClient, store: StateStore) -> None:
        self.config = config
        self.engine_source = engine_source
        self.engine = engine
        self.client = client
        self.store = store
        self.content = ContentCache(client, store)
        self.include = [re.compile(p) for p in config.upstream_include]
        self.exclude = [re.compile(p) for p in config.upstream_exclude]
        self.facts = EngineFacts()
        self._facts_lock = threading.Lock()  # the drift and the versions loops both ask
        self.states: dict[str, TagState] = {}
        self._due: dict[str, float] = {}
        self._failures: dict[str, int] = {}
        self._signed: dict[str, tuple[bool, float]] = {}  # digest -> (signed, checked)
        self._health: dict[str, _RegistryHealth] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(config.upstream_concurrency,
                                        thread_name_prefix="upstream")
        self._per_registry: dict[str, threading.Semaphore] = {}

    # -- engine facts ------------------------------------------------------------------------

    def _refresh_facts(self) -> None:
        with self._facts_lock:
            self._read_facts()

    def _read_facts(self) -> None:
        if self.facts.read_at and time.time() - self.facts.read_at < self.config.upstream_interval:
            return
        facts = EngineFacts(read_at=time.time())
        try:
            info = self.engine.info()
            version = self.engine.version()
        except EngineError as exc:
            log.warning("cannot read registry settings from the engine: %s", exc.reason)
            facts.read_at = 0.0
        else:
            registry_config = info.get("RegistryConfig") or {}
            cidrs = []
            for cidr in registry_config.get("InsecureRegistryCIDRs") or []:
                try:
                    cidrs.append(ipaddress.ip_network(str(cidr), strict=False))
                except ValueError:
                    continue
            facts.insecure_cidrs = tuple(cidrs)
            facts.insecure_hosts = frozenset(
                name for name, index in (registry_config.get("IndexConfigs") or {}).items()
                if isinstance(index, dict) and index.get("Secure") is False)
            os_name = str(version.get("Os") or "linux")
            arch = str(version.get("Arch") or "amd64")
            facts.platform = Platform(os_name, _ARCH.get(arch, arch))
        if self.config.upstream_platform:
            facts.platform = Platform.parse(self.config.upstream_platform)
        self.facts = facts

    def platform(self) -> Platform:
        """This host's platform, as the engine says (read at most once per interval)."""
        self._refresh_facts()
        return self.facts.platform

    def insecure(self, registry: str) -> bool:
        """Plain HTTP allowed: as the engine decides it, plus the configured list."""
        if registry in self.config.upstream_insecure_registries:
            return True
        if registry in self.facts.insecure_hosts:
            return True
        host = registry.rsplit(":", 1)[0] if not registry.endswith("]") else registry
        host = host.strip("[]")
        if host == "localhost":
            host = "127.0.0.1"
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(ip in cidr for cidr in self.facts.insecure_cidrs)

    # -- the cycle ---------------------------------------------------------------------------

    def collect_targets(self) -> list[Target]:
        if not self.engine_source.ready.wait(ENGINE_WAIT) or self.engine_source.snapshot is None:
            raise RuntimeError("no engine snapshot yet")
        self._refresh_facts()
        return targets(self.engine_source.snapshot, self.include, self.exclude)

    def run(self) -> UpstreamSnapshot:
        current = self.collect_targets()
        now = time.time()
        wanted = {t.image for t in current}
        with self._lock:
            for gone in set(self.states) - wanted:
                del self.states[gone]
                self._due.pop(gone, None)
                self._failures.pop(gone, None)
                self.store.clear_drift(gone)
            due = []
            for t in current:
                state = self.states.get(t.image)
                if state is None or state.image_id != t.image_id or self._due.get(
                        t.image, 0.0) <= now:
                    due.append(t)
        # One request per distinct (registry, repository, tag): the image label is the key.
        futures = [self._pool.submit(self._check, t) for t in due]
        for f in futures:
            f.result()
        with self._lock:
            served = {s.upstream_digest for s in self.states.values()}
            for digest in set(self._signed) - served:
                del self._signed[digest]
        return self.snapshot()

    def snapshot(self) -> UpstreamSnapshot:
        with self._lock:
            states = tuple(sorted(self.states.values(), key=lambda s: s.image))
        return UpstreamSnapshot(states, *self.client.counters())

    def _semaphore(self, registry: str) -> threading.Semaphore:
        with self._lock:
            return self._per_registry.setdefault(
                registry, threading.Semaphore(self.config.upstream_registry_concurrency))

    def _check(self, t: Target) -> None:
        registry = t.ref.domain
        if not t.local_digests:
            self._record(t, "unknown", "no_repo_digest")
            return
        health = self._health.get(registry)
        if health and health.blocked_until > time.time():
            self._record(t, "unknown", health.reason, retry_at=health.blocked_until)
            return
        try:
            with self._semaphore(registry):
                health = self._health.get(registry)
                if health and health.blocked_until > time.time():
                    self._record(t, "unknown", health.reason, retry_at=health.blocked_until)
                    return
                status, digest, config_digest, manifest = self._decide(t)
                signed, created = self._extras(t, status, digest, config_digest)
        except RegistryError as exc:
            retry_at = self._registry_failed(registry, exc) if exc.reason in \
                REGISTRY_FAILURES else None
            self._record(t, "unknown", exc.reason, retry_at=retry_at)
            return
        except Exception:  # a bug must not stop the other checks
            log.exception("checking %s failed", t.image)
            self._record(t, "unknown", "error")
            return
        with self._lock:
            self._health.pop(registry, None)
        self._record(t, status, "", digest, config_digest, signed=signed, created=created,
                     manifest=manifest)

    def _extras(self, t: Target, status: str, digest: str,
                config_digest: str) -> tuple[bool | None, float | None]:
        """Whether upstream's digest is signed, and when its image for this platform was built.

        A current tag's image is the local one (same config), so its time costs nothing; a
        drifted one's config blob is read once per digest. A signature found is kept; a
        missing one is looked for again after versions.interval.
        """
        created = t.created
        try:
            if status == "drifted":
                created = self.content.created(t.ref.domain, t.ref.path, config_digest) \
                    if config_digest else None
            with self._lock:
                known = self._signed.get(digest)
            if known is None or (not known[0] and time.time() - known[1] >
                                 self.config.versions_interval):
                known = (self.content.signed(t.ref.domain, t.ref.path, digest), time.time())
                with self._lock:
                    self._signed[digest] = known
        except RegistryError as exc:
            # The drift state is decided; what could not be read stays unknown (absent).
            log.info("signature or build time of %s not read: %s", t.image, exc)
            return None, (None if status == "drifted" else created)
        return known[0], created

    def _registry_failed(self, registry: str, exc: RegistryError) -> float:
        with self._lock:
            health = self._health.setdefault(registry, _RegistryHealth())
            if health.blocked_until > time.time():
                return health.blocked_until  # another check already backed off
            health.failures += 1
            # Not capped by the interval: a registry that keeps refusing is left alone longer.
            wait = exc.retry_after if exc.retry_after is not None else backoff.delay(
                health.failures, MIN_BACKOFF, MAX_BACKOFF)
            health.blocked_until = time.time() + backoff.jittered(wait, 1.0, 1.1)
            health.reason = exc.reason
            if health.failures == 1:
                log.warning("registry %s: %s; backing off %.0fs", registry, exc, wait)
            return health.blocked_until

    def _decide(self, t: Target) -> tuple[str, str, str, str]:
        """(status, upstream digest, upstream config and manifest digests for this platform)."""
        assert t.ref.tag is not None
        head = self.client.head_digest(t.ref.domain, t.ref.path, t.ref.tag)
        local = drift.Local(t.image_id, t.local_digests,
                            drift.platform_manifest(t.manifests, self.facts.platform))
        decision = drift.decide(
            local, head, self.facts.platform,
            lambda digest: self.content.manifest(t.ref.domain, t.ref.path, digest))
        return decision.status, decision.digest, decision.config, decision.manifest

    def _record(self, t: Target, status: str, reason: str, digest: str = "",
                config_digest: str = "", retry_at: float | None = None,
                signed: bool | None = None, created: float | None = None,
                manifest: str = "") -> None:
        now = time.time()
        if status == "drifted":
            self.store.set_drift_since(t.image, now)
        elif status in ("current", "platform_unchanged"):
            self.store.clear_drift(t.image)
        # "known" is the central checker's: a digest was read, nothing was compared.
        with self._lock:
            previous = self.states.get(t.image)
            known = status != "unknown"
            self.states[t.image] = TagState(
                image=t.image, image_id=t.image_id, status=status, reason=reason,
                upstream_digest=digest or (previous.upstream_digest if previous else ""),
                upstream_config=config_digest if known else (
                    previous.upstream_config if previous else ""),
                checked=now if known else (previous.checked if previous else None),
                drift_since=self.store.drift_since(t.image),
                signed=signed if known else (previous.signed if previous else None),
                created=created if known else (previous.created if previous else None),
                upstream_manifest=manifest if known else (
                    previous.upstream_manifest if previous else ""))
            interval = self.config.upstream_interval
            if known or reason == "no_repo_digest":
                self._failures.pop(t.image, None)
                wait = backoff.jittered(interval, 0.9, 1.0)
            elif retry_at is not None:
                wait = retry_at - now
            else:
                failures = self._failures[t.image] = self._failures.get(t.image, 0) + 1
                wait = backoff.delay(failures, MIN_BACKOFF, interval)
            self._due[t.image] = now + wait

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.client.close()
        self.engine.close()


class CentralChecker(UpstreamChecker):
    """Fleet mode: one HEAD per distinct tag for a whole fleet.

    The tags come from Prometheus (every host exporter's ``docker_image_info`` with a registry
    digest) or a static list; the result is the digest each tag names upstream and when that
    last changed. Recording rules join it back to the hosts (alerts/fleet rules).
    """

    QUERY = 'count by (image) (docker_image_info{digest!=""})'

    def __init__(self, config: Config, client: RegistryClient, store: StateStore) -> None:
        super().__init__(config, None, None, client, store)  # type: ignore[arg-type]
        self.shard = _parse_shard(config.upstream_shard)
        self.http = httpx.Client(timeout=config.upstream_timeout, trust_env=False)

    def discover(self) -> list[str]:
        refs = set(self.config.upstream_references)
        if self.config.upstream_prometheus_url:
            try:
                r = self.http.get(f"{self.config.upstream_prometheus_url}/api/v1/query",
                                  params={"query": self.QUERY})
                r.raise_for_status()
                result = r.json()["data"]["result"]
            except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
                raise RuntimeError(f"cannot ask Prometheus for the fleet's tags: {exc}") from exc
            refs.update(str(item.get("metric", {}).get("image", "")) for item in result
                        if isinstance(item, dict))
        return sorted(r for r in refs if r)

    def collect_targets(self) -> list[Target]:
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

    def _decide(self, t: Target) -> tuple[str, str, str, str]:
        assert t.ref.tag is not None
        return "current", self.client.head_digest(t.ref.domain, t.ref.path, t.ref.tag), "", ""

    def _extras(self, t: Target, status: str, digest: str,
                config_digest: str) -> tuple[bool | None, float | None]:
        return None, None  # fleet mode compares digests only

    def _record(self, t: Target, status: str, reason: str, digest: str = "",
                config_digest: str = "", retry_at: float | None = None,
                signed: bool | None = None, created: float | None = None,
                manifest: str = "") -> None:
        changed = None
        if status != "unknown":
            known = self.store.tag_digest(t.image)
            if known is None or known[0] != digest:
                self.store.set_tag_digest(t.image, digest, time.time())
        known = self.store.tag_digest(t.image)
        changed = known[1] if known else None
        super()._record(t, "unknown" if status == "unknown" else "known", reason, digest,
                        config_digest, retry_at)
        with self._lock:
            state = self.states[t.image]
            self.states[t.image] = dataclasses.replace(state, changed=changed)

    def close(self) -> None:
        self.http.close()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.client.close()


def _parse_shard(text: str) -> tuple[int, int]:
    index, _, count = (text or "0/1").partition("/")
    return int(index), int(count)


def make_source(config: Config, engine_source: Source[EngineSnapshot]
                ) -> tuple[Source[UpstreamSnapshot], UpstreamChecker]:
    """The upstream source: wakes every minute (or interval) and checks what is due."""
    from exporter.registry.credentials import CredentialStore, default_docker_config
    from exporter.state import default_path

    store = StateStore(config.state_path or default_path())
    creds = CredentialStore(dict(config.registries),
                            config.docker_config or default_docker_config())
    holder: dict[str, UpstreamChecker] = {}
    client = RegistryClient(creds, lambda r: holder["checker"].insecure(r),
                            timeout=config.upstream_timeout,
                            connections=config.upstream_registry_concurrency)
    checker: UpstreamChecker
    if config.upstream_mode == "central":
        checker = CentralChecker(config, client, store)
    else:
        checker = UpstreamChecker(config, engine_source,
                                  Engine(config.docker_host, config.docker_timeout), client,
                                  store)
    holder["checker"] = checker

    def close() -> None:
        checker.close()
        store.close()

    source = Source("upstream", checker.run, min(config.upstream_interval, TICK), close)
    return source, checker
