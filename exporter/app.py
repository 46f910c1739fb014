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
from exporter.config import Config
from exporter.engine import Engine
from exporter.readers import DiskReader, EngineReader
from exporter.refresh import Source
from exporter.snapshots import DiskSnapshot, EngineSnapshot


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
        self.registry = CollectorRegistry(auto_describe=False)
        for collector in (
            ExporterCollector(self.engine, self.sources),
            DiskCollector(self.disk),
            ImagesCollector(self.engine),
            ContainersCollector(self.engine),
        ):
            self.registry.register(collector)
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
