"""The exporter's own health: engine reachability, and each source's last refresh.

Sample output::

    docker_up 1.0
    docker_exporter_build_info{version="0.1.0"} 1.0
    docker_exporter_collector_success{collector="engine"} 1.0
    docker_exporter_collector_duration_seconds{collector="disk"} 0.0123
    docker_exporter_collector_last_success_timestamp_seconds{collector="disk"} 1.7958e+09
    docker_exporter_collector_alive{collector="disk"} 1.0
    docker_exporter_collector_failures_total{collector="disk"} 3.0
    docker_exporter_state_persistent 1.0
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from exporter import __version__
from exporter.sources.loop import Source
from exporter.state import StateStore


class ExporterCollector:
    def __init__(self, engine: Source[Any] | None, sources: Sequence[Source[Any]],
                 store: StateStore | None = None) -> None:
        self.engine = engine
        self.sources = sources
        self.store = store

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        if self.engine is not None:  # the fleet's central checker reads no engine
            yield GaugeMetricFamily(
                "docker_up", "1 when the last read of images and containers from the Docker "
                "Engine, Podman or the CRI runtime succeeded, else 0.",
                value=1 if self.engine.status.success else 0)
            snap = self.engine.snapshot
            if snap is not None:
                info = GaugeMetricFamily(
                    "docker_engine_info", "The engine this exporter reads: docker, podman, or "
                    "a Kubernetes node's CRI runtime (containerd); always 1.",
                    labels=["engine", "version", "api_version"])
                info.add_metric([snap.engine, snap.engine_version, snap.api_version], 1)
                yield info
        build = GaugeMetricFamily(
            "docker_exporter_build_info", "The exporter's version; always 1.", labels=["version"])
        build.add_metric([__version__], 1)
        yield build
        success = GaugeMetricFamily(
            "docker_exporter_collector_success",
            "1 when the collector's last background refresh succeeded, else 0 (0 until the "
            "first one finished). Its metrics keep the last good values meanwhile.",
            labels=["collector"])
        duration = GaugeMetricFamily(
            "docker_exporter_collector_duration_seconds",
            "How long the collector's last background refresh took.", labels=["collector"])
        last = GaugeMetricFamily(
            "docker_exporter_collector_last_success_timestamp_seconds",
            "When the collector last refreshed successfully: the age of the values it serves.",
            labels=["collector"])
        alive = GaugeMetricFamily(
            "docker_exporter_collector_alive",
            "1 while the collector's background loop runs, 0 if it has ended: a dead loop "
            "never looks like a quiet one.", labels=["collector"])
        failures = CounterMetricFamily(
            "docker_exporter_collector_failures",
            "Background refreshes of the collector that failed (for events: disconnects).",
            labels=["collector"])
        for source in self.sources:
            status = source.status
            success.add_metric([source.name], 1 if status.success else 0)
            duration.add_metric([source.name], status.duration)
            if status.last_success is not None:
                last.add_metric([source.name], status.last_success)
            alive.add_metric([source.name], 1 if status.alive else 0)
            failures.add_metric([source.name], status.failures)
        yield from (success, duration, last, alive, failures)
        if self.store is not None:
            yield GaugeMetricFamily(
                "docker_exporter_state_persistent",
                "1 when the state store (drift-since times, verdicts, tags' first sight, "
                "registry documents) is written to disk now, 0 while it is kept in memory "
                "only because the file cannot be written (locked, read-only; tried again "
                "with back-off).",
                value=1 if self.store.persistent else 0)
