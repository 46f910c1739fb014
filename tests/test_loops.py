"""Loops that cannot die: every background loop survives thousands of failures in a row and
then recovers; the event stream notices a half-open connection and reconnects."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from exporter.config import Config, HarborInstance
from exporter.snapshots import EngineSnapshot
from exporter.sources.events import EventStream
from exporter.sources.harbor import HarborReader
from exporter.sources.hub import HubAPI, HubReader
from exporter.sources.loop import Source
from exporter.sources.upstream import make_source
from exporter.sources.versions import make_source as make_versions_source
from tests.services import Dockerd, Registry, free_port, wait_for
from tests.standins import DockerHub, Harbor
from tests.unixproxy import UnixProxy

FAILURES = 5_001


def _drive(source: Source, heal: Callable[[], None], failures: int = FAILURES) -> None:
    """Run the loop until it has failed ``failures`` times in a row, heal what it reads, and
    wait for it to succeed: the same thread, never restarted."""
    stop = threading.Event()
    source.start(stop)
    try:
        wait_for(lambda: source.status.failures >= failures, 120,
                 f"{source.name}: {failures} failures")
        assert not source.status.success and source.status.alive
        thread = source._thread
        heal()
        wait_for(lambda: source.status.success, 30, f"{source.name} to recover")
        assert source._thread is thread and source.status.alive
    finally:
        stop.set()
        source.join(5)


def _engine_source(ready: bool = True) -> Source[EngineSnapshot]:
    engine: Source[EngineSnapshot] = Source("engine", lambda: EngineSnapshot((), (), ""), 60)
    if ready:
        engine.ready.set()  # attempted, but no snapshot: as when the engine is down
    return engine


def test_hub_loop(tmp_path: Path) -> None:
    api = HubAPI(f"http://127.0.0.1:{free_port()}", "", "")  # nothing listens there
    reader = HubReader(api, ("library/nginx",), False, _engine_source())
    hub = DockerHub({"library/nginx": (10, 1, "2026-01-01T00:00:00Z")})
    try:
        def heal() -> None:  # the API is now answered, at another address
            api.url, api.host = hub.url, f"127.0.0.1:{hub.port}"
        _drive(Source("hub", reader.read, 1e-5), heal)
    finally:
        hub.stop()
        api.close()


def test_harbor_loop() -> None:
    harbor = Harbor({"team": {"app": 3}}, ("robot", "secret"))
    dead = HarborInstance(f"http://127.0.0.1:{free_port()}", "robot", "secret", ("team",))
    reader = HarborReader((dead,))
    try:
        _drive(Source("harbor", reader.read, 1e-5), lambda: setattr(
            reader, "instances", (replace(dead, url=harbor.url),)))
    finally:
        harbor.stop()
        reader.close()


@pytest.mark.parametrize("loop", ["upstream", "versions"])
def test_registry_loops(loop: str, tmp_path: Path) -> None:
    """No engine snapshot yet: both loops wait (quietly) and go on when one arrives."""
    engine = _engine_source()
    config = Config(state_path=str(tmp_path / "state.db"), upstream_interval=1.0,
                    docker_host=f"unix://{tmp_path}/none.sock")
    upstream = make_source(config, engine)
    source = upstream.source if loop == "upstream" else make_versions_source(
        config, engine, upstream, None)
    source.interval = 1e-5
    try:
        _drive(source, lambda: setattr(engine, "snapshot", EngineSnapshot((), (), "")))
    finally:
        upstream.checks.close()
        upstream.store.close()


def test_event_stream_loop(tmp_path: Path) -> None:
    root = tmp_path / "d"
    root.mkdir()
    events = EventStream(f"unix://{root}/docker.sock", silence=2.0, retry=(1e-5, 1e-5))
    stop = threading.Event()
    events.start(stop)
    daemon = Dockerd(root)
    try:
        wait_for(lambda: events.status.failures >= FAILURES, 120, "5,000 failed connects")
        assert events.status.alive and not events.status.success
        daemon.start()
        wait_for(lambda: events.status.success, 30, "the stream to connect")
        assert events.status.alive
    finally:
        stop.set()
        events.join(5)
        daemon.stop()


def test_engine_loop_black_box(tmp_path: Path, exporter_factory) -> None:
    """The exporter process against a socket that is missing, then appears."""
    root = tmp_path / "late"
    root.mkdir()
    exp = exporter_factory("--docker.host", f"unix://{root}/docker.sock",
                           "--collector.engine.interval", "1ms",
                           "--collector.disk.interval", "1ms", "--upstream.mode", "off")
    m = exp.wait_metrics(lambda m: all(m.get("docker_exporter_collector_failures_total",
                                             collector=c) >= FAILURES
                                       for c in ("engine", "disk")),
                         timeout=180, what="5,000 failures of the engine and disk loops")
    assert m.get("docker_up") == 0
    daemon = Dockerd(root)
    try:
        daemon.start()
        m = exp.wait_metrics(lambda m: m.get("docker_up") == 1 and m.get(
            "docker_exporter_collector_success", collector="disk") == 1 and m.get(
            "docker_exporter_collector_success", collector="events") == 1, timeout=60,
            what="recovery")
        for c in ("engine", "disk", "events"):
            assert m.get("docker_exporter_collector_alive", collector=c) == 1
        log = exp.log()
    finally:
        daemon.stop()
    assert "Traceback" not in log
    # One root cause, one warning: the engine's; disk and events say it at info level.
    assert log.count("level=warn") == 1, log[-3000:]
    assert log.count("source engine is failing") == 1


def test_half_open_event_stream_is_noticed(tmp_path: Path, dockerd: Dockerd,
                                           registry: Registry, exporter_factory) -> None:
    proxy = UnixProxy(tmp_path / "proxy.sock", dockerd.socket)
    ref = f"{registry.address}/hygiene/halfopen:1"
    dockerd.build(ref, "FROM hygiene-base:1\nCOPY v /v\n", {"v": "half-open"})
    dockerd.cli("push", ref)
    try:
        exp = exporter_factory("--docker.host", proxy.host, "--collector.engine.interval",
                               "250ms", "--upstream.mode", "off")  # silence: 1 s
        exp.wait_metrics(lambda m: m.get("docker_exporter_collector_success",
                                         collector="events") == 1, what="streaming")
        # The stream's connection goes half-open: the engine is fine, the socket is dead.
        proxy.freeze()
        dockerd.cli("pull", ref)
        m = exp.wait_metrics(lambda m: m.get("docker_image_pulls_total",
                                             repository=f"{registry.address}/hygiene/halfopen")
                             == 1, timeout=15, what="the pull, through a new stream")
        assert m.get("docker_exporter_collector_success", collector="events") == 1
        # Now the engine hangs for new connections too: the stream is reported down ...
        proxy.freeze()
        proxy.blackhole(True)
        exp.wait_metrics(lambda m: m.get("docker_exporter_collector_success",
                                         collector="events") == 0, timeout=15,
                         what="the stream reported disconnected")
        # ... and back when the engine answers again.
        proxy.blackhole(False)
        exp.wait_metrics(lambda m: m.get("docker_exporter_collector_success",
                                         collector="events") == 1, timeout=30,
                         what="reconnected")
    finally:
        proxy.stop()
    assert "Traceback" not in exp.log()
