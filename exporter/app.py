"""Wiring: one Exporter holds the sources, their loops and the metrics registry."""

from __future__ import annotations

import threading
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.process_collector import ProcessCollector

from exporter.collectors.containers import ContainersCollector
from exporter.collectors.disk import DiskCollector
from exporter.collectors.exporter import ExporterCollector
from exporter.collectors.images import ImagesCollector
from exporter.collectors.upstream import UpstreamCollector
from exporter.config import Config
from exporter.engine import Engine
from exporter.readers import DiskReader, EngineReader
from exporter.refresh import Source
from exporter.snapshots import DiskSnapshot, EngineSnapshot, UpstreamSnapshot
from exporter.state import StateStore
from exporter.upstream import make_source


def build_registry(engine: Source[EngineSnapshot], disk: Source[DiskSnapshot],
                   sources: list[Source[Any]], upstream: Source[UpstreamSnapshot] | None,
                   upstream_interval: float, store: StateStore | None) -> CollectorRegistry:
    """The registry of every docker_* collector; the golden test renders exactly this."""
    registry = CollectorRegistry(auto_describe=False)
    for collector in (
        ExporterCollector(engine, sources, store),
        DiskCollector(disk),
        ImagesCollector(engine),
        ContainersCollector(engine),
    ):
        registry.register(collector)
    if upstream is not None:
        registry.register(UpstreamCollector(upstream, engine, upstream_interval))
    return registry


class Exporter:
    def __init__(self, config: Config) -> None:
        self.config = config
        engine = Engine(config.docker_host, config.docker_timeout)
        disk_engine = Engine(config.docker_host, config.collector_disk_timeout)
        self.engine: Source[EngineSnapshot] = Source(
            "engine", EngineReader(engine).read, config.collector_engine_interval, engine.close)
        self.disk: Source[DiskSnapshot] = Source(
            "disk", DiskReader(disk_engine).read, config.collector_disk_interval,
            disk_engine.close)
        self.sources: list[Source[Any]] = [self.engine, self.disk]
        self.upstream: Source[UpstreamSnapshot] | None = None
        self.store: StateStore | None = None
        if config.upstream_mode == "local":
            self.upstream, checker = make_source(config, self.engine)
            self.store = checker.store
            self.sources.append(self.upstream)
        self.registry = build_registry(self.engine, self.disk, self.sources, self.upstream,
                                       config.upstream_interval, self.store)
        ProcessCollector(registry=self.registry)
        self._stop = threading.Event()

    @property
    def ready(self) -> bool:
        return self.engine.ready.is_set()

    def start(self) -> None:
        for source in self.sources:
            source.start(self._stop)

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        for source in self.sources:
            source.join(timeout)
