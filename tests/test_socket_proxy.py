"""The exporter behind deploy/socket-proxy/haproxy.cfg, run by the real HAProxy.

The proxy is what lets an operator give the exporter the engine's API without giving it the
engine: these tests show the exporter gets everything it reads through it (images, inspect,
containers, /system/df, the event stream) and that anything else (POST, DELETE, logs,
archive, path tricks) is answered 403 without reaching the daemon.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.services import ROOT, Dockerd, Registry, free_port, need, wait_for

CONFIG = ROOT / "deploy" / "socket-proxy" / "haproxy.cfg"
# option httplog with the captured User-Agent: client, frontend, backend/server, status, UA,
# request line.
LOG_LINE = re.compile(r"^\S+ \[[^\]]+\] \S+ (?P<backend>\S+) \S+ (?P<status>-?\d+) .*"
                      r"\{(?P<agent>[^}]*)\} \"(?P<method>\S+) (?P<path>\S+)")


def raw_request(port: int, method: str, path: str, body: dict | None = None,
                timeout: float = 10) -> int:
    """One request with the path sent as written (httpx would resolve the dot segments)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        payload = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if payload else {}
        conn.request(method, path, body=payload, headers=headers)
        return conn.getresponse().status
    finally:
        conn.close()


@dataclass
class HAProxy:
    """HAProxy with the shipped configuration, its address and socket given by environment."""

    root: Path
    upstream: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.root / "haproxy.log"

    def start(self, timeout: float = 10) -> HAProxy:
        """Start in the foreground; a proxy that exits or never answers raises with its log."""
        binary = need("haproxy")
        self.root.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "DOCKER_PROXY_BIND": f"127.0.0.1:{self.port}",
               "DOCKER_SOCKET": str(self.upstream)}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([binary, "-db", "-f", str(CONFIG)], stdout=log,
                                         stderr=log, env=env, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                code, self.proc = self.proc.returncode, None
                raise RuntimeError(f"haproxy exited with {code}: {self.log()}")
            # An HTTP answer, not just a connection: whoever else holds the port would accept.
            with contextlib.suppress(OSError):
                if raw_request(self.port, "HEAD", "/_ping", timeout=0.5):
                    return self
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"haproxy did not answer on {self.port}: {self.log()}")
            time.sleep(0.05)

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def requests(self) -> list[dict[str, str]]:
        return [m.groupdict() for line in self.log().splitlines()
                if (m := LOG_LINE.match(line))]

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.proc = None


@pytest.fixture
def proxy(dockerd: Dockerd, tmp_path: Path) -> Iterator[HAProxy]:
    haproxy = HAProxy(tmp_path / "haproxy", dockerd.socket).start()
    try:
        yield haproxy
    finally:
        haproxy.stop()


def test_config_is_valid() -> None:
    proc = subprocess.run([need("haproxy"), "-c", "-f", str(CONFIG)], capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_exporter_reads_everything_through_the_proxy(dockerd: Dockerd, registry: Registry,
                                                     proxy: HAProxy, exporter_factory) -> None:
    """Lists, inspects, /system/df and the event stream all pass; the exporter never sees 403."""
    d = dockerd
    suffix = f"{os.getpid()}-{time.monotonic_ns()}"
    ref = f"{registry.address}/hygiene/proxied:1"
    repository = ref.rsplit(":", 1)[0]
    d.build(ref, "FROM hygiene-base:1\nCOPY v /v\n", {"v": f"one {suffix}"})
    d.cli("push", ref)
    app = f"hygiene-proxied-{suffix}"
    d.cli("create", "--name", app, "--network", "none", ref, "/bin/busybox", "true")
    try:
        exp = exporter_factory("--docker.host", f"tcp://127.0.0.1:{proxy.port}",
                               "--collector.engine.interval", "1s",
                               "--collector.disk.interval", "2s", "--upstream.mode", "off")
        m = exp.wait_metrics(lambda m: m.get("docker_up") == 1
                             and m.get("docker_exporter_collector_success", collector="disk") == 1
                             and m.get("docker_exporter_collector_success",
                                       collector="events") == 1,
                             what="engine, disk and events read through the proxy")
        assert m.get("docker_disk_usage_bytes", kind="images") > 0
        assert m.select("docker_image_info", image="hygiene-base:1")
        assert m.get("docker_container_image_stale", container=app) == 0

        # Changes made directly on the daemon show up through the proxy: a pull (the event
        # stream), a new tag (image inspect) and a tag moved under a container (container
        # inspect).
        d.cli("pull", ref)
        tag = f"hygiene-proxied-tag-{suffix}:1"
        d.cli("tag", "hygiene-base:1", tag)
        d.build(ref, "FROM hygiene-base:1\nCOPY v /v\n", {"v": f"two {suffix}"})
        exp.wait_metrics(lambda m: m.get("docker_image_pulls_total", repository=repository) == 1
                         and m.select("docker_image_info", image=tag)
                         and m.get("docker_container_image_stale", container=app) == 1,
                         what="the pull, the new tag and the stale container")
        exp.stop()  # ends the event stream, so HAProxy logs it

        wait_for(lambda: any("/events" in r["path"] for r in proxy.requests()), 10,
                 "haproxy to log the event stream")
        exporter_requests = [r for r in proxy.requests()
                             if r["agent"].startswith("docker-sdk-python")]
        paths = {re.sub(r"^/v[0-9.]+", "", r["path"].split("?")[0])
                 for r in exporter_requests}
        assert {"/images/json", "/containers/json", "/system/df", "/events"} <= paths, paths
        assert any(re.fullmatch(r"/images/sha256:[0-9a-f]{64}/json", p) for p in paths)
        assert any(re.fullmatch(r"/containers/[0-9a-f]{64}/json", p) for p in paths)
        denied = [r for r in exporter_requests if r["status"] == "403"]
        assert not denied, denied
        assert {r["method"] for r in exporter_requests} <= {"GET", "HEAD"}
        # One stream from start to stop, on the backend with the long timeout.
        events = [r for r in exporter_requests if "/events" in r["path"]]
        assert [r["backend"] for r in events] == ["docker-events/dockerd"], events
        log = exp.log()
        assert not re.search(r"\b403\b|Forbidden|event stream disconnected", log), log
    finally:
        d.cli("rm", "-f", app, check=False)


def test_everything_else_is_forbidden(dockerd: Dockerd, proxy: HAProxy) -> None:
    """Writes, and the GETs that read files, logs or attach, are 403 and never reach dockerd."""
    d = dockerd
    name = f"hygiene-forbidden-{os.getpid()}-{time.monotonic_ns()}"
    cid = d.cli("create", "--name", name, "--network", "none", "hygiene-base:1",
                "/bin/busybox", "true").strip()
    try:
        before = set(d.cli("ps", "-a", "-q", "--no-trunc").split())
        image_id = d.cli("image", "inspect", "-f", "{{.Id}}", "hygiene-base:1").strip()
        assert raw_request(proxy.port, "HEAD", "/_ping") == 200
        assert raw_request(proxy.port, "GET", "/v1.41/images/json") == 200
        assert raw_request(proxy.port, "GET", f"/containers/{cid}/json") == 200
        forbidden = [
            ("POST", "/v1.41/containers/create", {"Image": "hygiene-base:1"}),
            ("POST", "/containers/create", {"Image": "hygiene-base:1"}),
            ("POST", f"/v1.41/containers/{cid}/start", None),
            ("DELETE", f"/v1.41/containers/{cid}", None),
            ("DELETE", "/v1.41/images/hygiene-base:1", None),
            ("PUT", f"/v1.41/containers/{cid}/archive?path=/", None),
            ("GET", f"/v1.41/containers/{cid}/archive?path=/bin", None),
            ("GET", f"/v1.41/containers/{cid}/logs?stdout=1", None),
            ("GET", f"/v1.41/containers/{cid}/export", None),
            ("GET", f"/v1.41/containers/{cid}/attach/ws?stdin=1", None),
            ("GET", "/v1.41/images/hygiene-base:1/get", None),
            ("GET", f"/v1.41/containers/{cid}%2Flogs/json", None),
            ("GET", "/v1.41/images/json/../../containers/json", None),
            ("GET", "/v1.41/volumes", None),
            ("GET", "/v1.41/secrets", None),
            ("POST", "/v1.41/build", None),
            ("OPTIONS", "/_ping", None),
            # Allowed paths, other methods: the method rule alone stops these.
            ("POST", "/v1.41/containers/json", None),
            ("DELETE", f"/v1.41/images/{image_id}/json", None),
            ("PUT", "/_ping", None),
        ]
        for method, path, body in forbidden:
            assert raw_request(proxy.port, method, path, body) == 403, (method, path)
        assert d.cli("inspect", "-f", "{{.State.Status}}", cid).strip() == "created"
        assert set(d.cli("ps", "-a", "-q", "--no-trunc").split()) == before  # none created
        assert d.cli("image", "inspect", "-f", "{{.Id}}", "hygiene-base:1").strip() == image_id
        wait_for(lambda: sum(r["status"] == "403" for r in proxy.requests()) == len(forbidden),
                 5, "haproxy to log every denial")
        assert all(r["backend"].endswith("<NOSRV>") for r in proxy.requests()
                   if r["status"] == "403"), proxy.log()
    finally:
        d.cli("rm", "-f", name, check=False)


def test_haproxy_that_cannot_start_fails_loudly(dockerd: Dockerd, tmp_path: Path) -> None:
    """A port already taken must not look like a working proxy."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        haproxy = HAProxy(tmp_path / "haproxy", dockerd.socket, port=taken.getsockname()[1])
        try:
            with pytest.raises(RuntimeError, match=r"(?i)cannot bind|address already in use"):
                haproxy.start()
            assert haproxy.proc is None  # stopped, nothing left running
        finally:
            haproxy.stop()
