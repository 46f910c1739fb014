"""Wiring: one Exporter holds the sources, their loops and the metrics registry."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry
from prometheus_client.process_collector import ProcessCollector

from exporter.collectors.containers import ContainersCollector
from exporter.collectors.disk import DiskCollector
from exporter.collectors.exporter import ExporterCollector
from exporter.collectors.fleet import FleetCollector
from exporter.collectors.images import ImagesCollector
from exporter.collectors.pulls import pulls_collectors
from exporter.collectors.upstream import UpstreamCollector
from exporter.collectors.versions import VersionsCollector
from exporter.config import Config
from exporter.exposition import Exposition
from exporter.snapshots import (
    DiskSnapshot,
    EngineSnapshot,
    HarborSnapshot,
    HubSnapshot,
    UpstreamSnapshot,
    VersionsSnapshot,
)
from exporter.sources.disk import DiskReader
from exporter.sources.engine import Engine
from exporter.sources.events import EventStream
from exporter.sources.harbor import HarborReader
from exporter.sources.hub import HubAPI, HubReader
from exporter.sources.inventory import EngineReader
from exporter.sources.loop import Problems, Source
from exporter.sources.upstream import make_source, request_policy
from exporter.sources.versions import make_source as make_versions_source
from exporter.sources.webhook import DistributionWebhook
from exporter.state import StateStore, default_path
from exporter.status import RowCache

if TYPE_CHECKING:  # grpc costs 20 MB of memory: imported only on a CRI node
    from exporter.sources.containerd_events import ContainerdEvents


@dataclass
class Parts:
    """Everything the collectors read from. Optional parts are None when switched off."""

    engine: Source[EngineSnapshot]
    disk: Source[DiskSnapshot]
    upstream: Source[UpstreamSnapshot] | None = None
    versions: Source[VersionsSnapshot] | None = None
    upstream_interval: float = 6 * 3600.0
    versions_interval: float = 12 * 3600.0
    store: StateStore | None = None
    events: EventStream | ContainerdEvents | None = None
    hub: Source[HubSnapshot] | None = None
    webhook: DistributionWebhook | None = None
    harbor: Source[HarborSnapshot] | None = None
    central: bool = False  # fleet mode's checker: no engine of its own

    @property
    def sources(self) -> list[Any]:
        """Everything with a name and a status, for the collector_* metrics."""
        if self.central:
            return [self.upstream]
        return [s for s in (self.engine, self.disk, self.upstream, self.versions, self.events,
                            self.hub, self.harbor) if s is not None]


def build_collectors(parts: Parts) -> list[Any]:
    """Every docker_* collector, in exposition order: those rendered from snapshots first,
    then the live ones, whose text a scrape appends (see exporter/exposition.py)."""
    if parts.central and parts.upstream is not None:
        return [FleetCollector(parts.upstream, parts.upstream_interval),
                ExporterCollector(None, parts.sources, parts.store)]
    collectors: list[Any] = [
        DiskCollector(parts.disk),
        ImagesCollector(parts.engine, parts.disk),
        ContainersCollector(parts.engine),
    ]
    if parts.upstream is not None:
        collectors.append(UpstreamCollector(parts.upstream, parts.engine,
                                            parts.upstream_interval))
    if parts.versions is not None:
        collectors.append(VersionsCollector(parts.versions, parts.versions_interval))
    collectors += pulls_collectors(parts.events, parts.hub, parts.webhook, parts.harbor)
    collectors.append(ExporterCollector(parts.engine, parts.sources, parts.store))
    return sorted(collectors, key=lambda c: getattr(c, "cache_key", None) is None)


def build_registry(parts: Parts) -> CollectorRegistry:
    """A registry of every docker_* collector; the golden test renders exactly this."""
    registry = CollectorRegistry(auto_describe=False)
    for collector in build_collectors(parts):
        registry.register(collector)
    return registry


class Exporter:
    def __init__(self, config: Config) -> None:
        self.config = config
        problems = Problems()  # one warning per root cause, whichever sources it stops
        central = config.upstream_mode == "central"
        # Also with upstream checks off (fleet hosts): the tags' first sight times the stale
        # grace period, and must survive restarts there too.
        store = StateStore(config.state_path or default_path())
        # A stream silent for four engine intervals is checked (and re-opened).
        silence = max(1.0, 4 * config.collector_engine_interval)
        events: EventStream | ContainerdEvents | None = None
        if config.cri_endpoint:
            from exporter.sources.containerd_events import ContainerdEvents
            from exporter.sources.cri import Cri, CriDiskReader, CriReader

            if config.events_enabled and not central:
                events = ContainerdEvents(config.cri_endpoint, config.cri_namespace, silence,
                                          problems, store=store)
            # One channel for both loops (gRPC channels are shared safely), every call with
            # docker.timeout: collector.disk.timeout is for /system/df's walk of every layer.
            api = Cri(config.cri_endpoint, config.docker_timeout)
            reader: Any = CriReader(api, store,
                                    events.pull_times if events is not None else dict)
            # ImageFsInfo is the runtime's cached figure, not a walk of every layer: it is
            # read as often as the images.
            disk = Source("disk", CriDiskReader(api).read, config.collector_engine_interval,
                          api.close, problems)
        else:
            api = Engine(config.docker_host, config.docker_timeout)
            disk_engine = Engine(config.docker_host, config.collector_disk_timeout)
            if config.events_enabled and not central:
                events = EventStream(config.docker_host, silence, problems, store=store)
            seen_pulled = events.pulled_repositories if events is not None else frozenset
            reader = EngineReader(api, seen_pulled, store,
                                  events.pull_times if events is not None else dict)
            disk = Source("disk", DiskReader(disk_engine).read, config.collector_disk_interval,
                          disk_engine.close, problems)
        parts = Parts(
            engine=Source("engine", reader.read,
                          config.collector_engine_interval, api.close, problems),
            disk=disk,
            upstream_interval=config.upstream_interval,
            versions_interval=config.versions_interval,
            store=store,
        )
        policy = request_policy(config)
        hub_api = None
        if config.hub_enabled and config.upstream_mode != "central":
            hub_api = HubAPI(config.hub_url, config.hub_username, config.hub_password,
                             policy=policy)
        if config.upstream_mode in ("local", "central"):
            upstream = make_source(config, parts.engine, problems, policy, store)
            parts.upstream, parts.store = upstream.source, upstream.store
            parts.central = config.upstream_mode == "central"
            if config.versions_enabled and not parts.central:
                parts.versions = make_versions_source(config, parts.engine, upstream, hub_api,
                                                      problems)
        parts.events = events
        if hub_api is not None and (config.hub_local_images or config.hub_repositories):
            hub = HubReader(hub_api, config.hub_repositories, config.hub_local_images,
                            parts.engine)
            parts.hub = Source("hub", hub.read, config.hub_interval, hub_api.close, problems)
        if config.webhook_distribution_secret:
            parts.webhook = DistributionWebhook(config.webhook_distribution_secret,
                                                dict(config.webhook_distribution_registries))
        if config.harbor_instances:
            harbor = HarborReader(config.harbor_instances, policy=policy)
            parts.harbor = Source("harbor", harbor.read, config.harbor_interval, harbor.close,
                                  problems)
        self.parts = parts
        self.engine = parts.engine
        self.sources = parts.sources
        self.webhook = parts.webhook
        self.exposition = Exposition(
            [*build_collectors(parts), ProcessCollector(registry=None)])
        for source in self.sources:
            if isinstance(source, Source):  # the event stream's pulls are rendered live
                source.on_publish(self.exposition.changed)
        self._stop = threading.Event()
        self._on_scrape = threading.Lock()
        self.status_rows = RowCache()  # the status page's rows, kept per snapshot

    @property
    def ready(self) -> bool:
        first = self.parts.upstream if self.parts.central else self.engine
        return first is not None and first.ready.is_set()

    def render(self, encoder: Callable[[Any], bytes], openmetrics: bool,
               gzip: bool = False) -> bytes:
        if self.config.collector_on_scrape:
            # The baseline most exporters are: read the engine while the scrape waits (one
            # scrape at a time: the readers are not shared between threads).
            with self._on_scrape:
                self.parts.engine.refresh()
                self.parts.disk.refresh()
                return self.exposition.render(encoder, openmetrics, gzip, fresh=True)
        return self.exposition.render(encoder, openmetrics, gzip)

    def start(self) -> None:
        if self.config.collector_on_scrape:
            self.parts.engine.refresh()  # so /-/ready means what it means in the default mode
        for source in self.sources:
            if self.config.collector_on_scrape and source in (self.parts.engine,
                                                              self.parts.disk):
                continue
            source.start(self._stop)
        self.exposition.start(self._stop)

    def stop(self, timeout: float = 0.5) -> None:
        """Signal every loop, give them ``timeout`` in all, and close the state store (every
        write is already committed; closing waits for one in progress, so nothing is
        half-written). A loop still inside a Docker or registry call is left behind: the
        process exits within a second of SIGTERM."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        for source in self.sources:
            source.join(max(0.0, deadline - time.monotonic()))
        if self.parts.store is not None:
            self.parts.store.close()
