"""Fault tolerance against the real components: a daemon killed and restarted, an unusable
state store, SIGTERM, a registry that misbehaves in ways not covered elsewhere, a soak run."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter import state
from exporter.registry.client import RegistryClient
from exporter.registry.credentials import CredentialStore
from exporter.registry.manifest import RegistryError
from exporter.registry.policy import RequestPolicy
from exporter.sources.webhook import DistributionWebhook
from tests.registries import FaultProxy, TokenServer, start_token_registry
from tests.services import Dockerd, ExporterProcess, Registry
from tests.test_upstream import FAST, push_version, status
from tests.tls import make_pki


def _proc_counts(pid: int) -> tuple[int, int, int]:
    """(threads, open file descriptors, RSS kB) of a process, from /proc."""
    threads = len(os.listdir(f"/proc/{pid}/task"))
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    rss = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text()
               .splitlines() if line.startswith("VmRSS:"))
    return threads, fds, rss


def test_daemon_killed_and_restarted(exporter_factory, tmp_path_factory) -> None:
    host = Dockerd(Path(tmp_path_factory.mktemp("killed", numbered=True))).start()
    try:
        exp = exporter_factory("--docker.host", host.host, "--upstream.mode", "off",
                               "--collector.engine.interval", "1s",
                               "--collector.disk.interval", "2s")
        def up(m):
            return (m.get("docker_up") == 1 and m.get(
                    "docker_exporter_collector_success", collector="events") == 1)
        exp.wait_metrics(up, what="up and streaming")
        counts = []
        for cycle in range(3):
            host.kill()
            m = exp.wait_metrics(lambda m: m.get("docker_up") == 0 and m.get(
                "docker_exporter_collector_success", collector="events") == 0,
                what="docker_up 0 after the kill")
            assert m.get("docker_exporter_collector_last_success_timestamp_seconds",
                         collector="engine") is not None  # last good values, with their age
            host.start()
            exp.wait_metrics(up, timeout=60, what=f"recovery {cycle}")
            time.sleep(2.5)  # let retries and reconnects settle
            counts.append(_proc_counts(exp.proc.pid))
        assert exp.proc.poll() is None
        # No thread or socket leak across kill/restart cycles.
        assert counts[-1][0] == counts[0][0], counts
        assert abs(counts[-1][1] - counts[0][1]) <= 2, counts
        log = exp.log()
        assert log.count("source engine is failing") == 3, log
        assert log.count("source engine is up again") == 3, log
        assert log.count("event stream disconnected") == 3, log
    finally:
        host.stop()


@pytest.mark.parametrize("kind", ["corrupt", "read_only", "missing_dirs"])
def test_state_store_unusable(kind: str, tmp_path: Path, registry: Registry,
                              dockerd: Dockerd, exporter_factory) -> None:
    ref = f"{registry.address}/hygiene/state-{kind.replace('_', '-')}:1"
    push_version(dockerd, ref, kind)
    if kind == "corrupt":
        path = tmp_path / "state.db"
        path.write_bytes(b"this is not a sqlite database" * 100)
    elif kind == "read_only":
        ro = tmp_path / "ro"
        ro.mkdir()
        subprocess.run(["mount", "--bind", str(ro), str(ro)], check=True)
        subprocess.run(["mount", "-o", "remount,ro,bind", str(ro)], check=True)
        path = ro / "state.db"
    else:
        path = tmp_path / "a" / "b" / "state.db"
    try:
        exp = exporter_factory("--docker.host", dockerd.host, *FAST, "--state.path", str(path),
                               "--upstream.include", f"^{ref}$")
        m = exp.wait_metrics(lambda m: status(m, ref) == "current", what="drift still works")
        persistent = m.get("docker_exporter_state_persistent")
        if kind == "missing_dirs":
            assert persistent == 1 and path.exists()
            return
        if kind == "corrupt":  # moved aside, and a fresh file started in its place
            assert persistent == 1
            aside = list(tmp_path.glob("state.db.corrupt-*"))
            assert len(aside) == 1 and aside[0].read_bytes().startswith(b"this is not")
            assert exp.log().count("moved it aside") == 1, exp.log()
            assert "keeping state in memory only" not in exp.log()
            return
        assert persistent == 0
        assert exp.log().count("keeping state in memory only") == 1, exp.log()
    finally:
        if kind == "read_only":
            subprocess.run(["umount", str(tmp_path / "ro")], check=True)


def test_state_store_keeps_documents_bounded(tmp_path: Path, monkeypatch) -> None:
    """Registry documents are kept up to a total size, the oldest dropped first, in memory
    and in SQLite alike; what is dropped costs one GET when wanted again."""
    monkeypatch.setattr(state, "MAX_DOCUMENTS_BYTES", 10_000)
    store = state.StateStore(str(tmp_path / "state.db"))
    for i in range(30):
        store.put_document(f"sha256:{i:064x}", "application/json", bytes([i]) * 1000)
    assert sorted(store.documents) == [f"sha256:{i:064x}" for i in range(20, 30)]
    store.close()
    reopened = state.StateStore(str(tmp_path / "state.db"))
    assert list(reopened.documents) == [f"sha256:{i:064x}" for i in range(20, 30)]
    reopened.put_document("sha256:" + "f" * 64, "application/json", b"x" * 1000)
    assert "sha256:" + f"{20:064x}" not in reopened.documents
    assert len(reopened.documents) == 10
    reopened.close()


def test_sigterm_stops_quickly_with_state_flushed(tmp_path: Path, registry: Registry,
                                                  dockerd: Dockerd) -> None:
    ref = f"{registry.address}/hygiene/sigterm:1"
    push_version(dockerd, ref, "sigterm one")
    from tests.test_upstream import publish_elsewhere

    publish_elsewhere(dockerd, ref, "sigterm two")
    state = tmp_path / "state.db"
    exp = ExporterProcess(["--docker.host", dockerd.host, *FAST, "--state.path", str(state),
                           "--upstream.include", f"^{ref}$", "--hub.enabled", "false"],
                          tmp_path / "exporter.log").start()
    try:
        exp.wait_metrics(lambda m: status(m, ref) == "drifted", what="drifted")
        started = time.monotonic()
        os.killpg(exp.proc.pid, signal.SIGTERM)
        assert exp.proc.wait(10) == 0
        assert time.monotonic() - started < 5
        assert "stopped" in exp.log()
        with sqlite3.connect(state) as db:
            rows = db.execute("SELECT image FROM drift").fetchall()
        assert (ref,) in rows
    finally:
        exp.stop()
        dockerd.cli("pull", ref)


def test_token_server_failure_is_token_error(tmp_path: Path, dockerd: Dockerd,
                                             exporter_factory) -> None:
    tokens = TokenServer(tmp_path / "tokens", {"u": "p"}).start()
    reg = start_token_registry(tmp_path / "registry", tokens)
    try:
        dockerd.cli("login", "-u", "u", "--password-stdin", reg.address, input=b"p")
        ref = f"{reg.address}/hygiene/tokfail:1"
        push_version(dockerd, ref, "token failure")
        tokens.fail_with = 500
        exp = exporter_factory("--docker.host", dockerd.host, *FAST, "--docker.config",
                               str(dockerd.root / "client-config" / "config.json"),
                               "--upstream.include", f"^{ref}$")
        exp.wait_metrics(lambda m: status(m, ref) == "unknown:token_error", what="token_error")
        tokens.fail_with = None
    finally:
        reg.stop()
        tokens.stop()


def test_oversized_manifest_is_bad_response(registry: Registry, dockerd: Dockerd,
                                            exporter_factory) -> None:
    proxy = FaultProxy(registry.port).start()
    try:
        ref = f"{proxy.address}/hygiene/huge:1"
        push_version(dockerd, ref, "huge")
        proxy.mode = "huge"
        exp = exporter_factory("--docker.host", dockerd.host, *FAST, "--upstream.include",
                               f"^{proxy.address}/")
        exp.wait_metrics(lambda m: status(m, ref) == "unknown:bad_response", what="too big")
    finally:
        proxy.stop()


def test_registry_tls_errors(tmp_path: Path) -> None:
    """A registry behind a certificate this host does not trust is tls_error, not current."""
    pki = make_pki(tmp_path / "pki")
    reg = Registry(tmp_path / "tls-registry")
    reg.start(f"  tls:\n    certificate: {pki / 'server.crt'}\n    key: {pki / 'server.key'}\n")
    try:
        client = RegistryClient(CredentialStore({}, None), insecure=lambda r: False,
                                policy=RequestPolicy(timeout=5))
        with pytest.raises(RegistryError) as err:
            client.head_digest(reg.address, "any/repo", "latest")
        assert err.value.reason == "tls_error"
        # the GET /v2/ ping, and nothing more: the registry is left alone now
        assert dict(client.counters().requests) == {(reg.address, "GET", "error"): 1}
        client.close()
    finally:
        reg.stop()


@given(st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["events", "action", "target", "request", "mediaType", "method",
                         "repository", "host", "addr", "id", "timestamp", "x"]),
        inner, max_size=5), max_leaves=25))
@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=300)
def test_fuzzed_webhook_bodies_never_raise(doc) -> None:
    import json

    hook = DistributionWebhook("s", {})
    code, _ = hook.handle("s", "application/json", json.dumps(doc).encode())
    assert code in (200, 400)
    code, _ = hook.handle("s", "application/json", json.dumps(doc).encode()[:-1])
    assert code in (200, 400)


def test_soak_memory_and_descriptors_stay_flat(dockerd: Dockerd, registry: Registry,
                                               exporter_factory) -> None:
    """A bounded soak: fast refresh cycles of every source and continuous scrapes."""
    ref = f"{registry.address}/hygiene/soak:1"
    push_version(dockerd, ref, "soak")
    exp = exporter_factory("--docker.host", dockerd.host, "--collector.engine.interval", "200ms",
                           "--collector.disk.interval", "500ms", "--upstream.interval", "1s",
                           "--upstream.include", f"^{ref}$")
    exp.wait_metrics(lambda m: status(m, ref) == "current", what="current")
    stop = threading.Event()
    scrapes = [0]

    def scrape() -> None:
        with httpx.Client() as client:
            while not stop.is_set():
                client.get(exp.url + "/metrics")
                scrapes[0] += 1

    threads = [threading.Thread(target=scrape) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        time.sleep(10)  # warm-up: caches, pools and allocator arenas fill
        first = _proc_counts(exp.proc.pid)
        time.sleep(30)  # the long run is bench/soak.py's (BENCHMARKS.md)
        last = _proc_counts(exp.proc.pid)
    finally:
        stop.set()
        for t in threads:
            t.join()
    m = exp.scrape()
    heads = m.get("docker_registry_requests_total", registry=registry.address, method="HEAD",
                  code="200")
    assert scrapes[0] > 300 and heads >= 25, (scrapes, heads)
    # Request threads and their sockets come and go with the scrapes in flight (2 here):
    # a leak is growth beyond that.
    assert last[0] <= first[0] + 2, (first, last)  # threads
    assert last[1] <= first[1] + 2, (first, last)  # file descriptors
    assert last[2] - first[2] < 8 * 1024, (first, last)  # RSS grew less than 8 MB
