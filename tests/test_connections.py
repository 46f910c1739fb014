"""Kept connections: the registry client reuses them against a real Distribution registry,
and a connection the peer closed while it was kept costs no failed request."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from exporter.registry.client import RegistryClient
from exporter.registry.credentials import CredentialStore
from exporter.registry.policy import RequestPolicy
from tests.registries import OCI_MANIFEST, put_blob, put_manifest
from tests.services import Registry, running


class Relay:
    """A TCP relay on loopback that counts the connections it accepts."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.accepted = 0
        self._server = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self._server.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                near, _ = self._server.accept()
            except OSError:
                return
            self.accepted += 1
            far = socket.create_connection(("127.0.0.1", self.target))
            for a, b in ((near, far), (far, near)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._server.close()


def client(timeout: float = 5.0) -> RegistryClient:
    return RegistryClient(CredentialStore({}, None), lambda r: True,
                          RequestPolicy(32, 8, timeout), fresh_for=0)


def test_requests_reuse_kept_connections_to_a_real_registry(tmp_path: Path) -> None:
    with running(Registry(tmp_path / "registry").start()) as reg:
        config = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
        doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
               "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                          "digest": put_blob(reg.address, "app", config),
                          "size": len(config)}, "layers": []}
        digest = put_manifest(reg.address, "app", "v1", doc, OCI_MANIFEST)
        relay = Relay(reg.port)
        c = client()
        try:
            with ThreadPoolExecutor(8) as pool:
                heads = list(pool.map(lambda _: c.head_digest(relay.address, "app", "v1"),
                                      range(400)))
            manifests = [c.get_manifest(relay.address, "app", "v1") for _ in range(20)]
        finally:
            c.close()
            relay.close()
    assert set(heads) == {digest}
    assert {m.digest for m in manifests} == {digest}
    # 421 requests (the /v2/ ping, 400 HEADs, 20 GETs), 8 at a time: at most one connection
    # for each request in flight at once, not one a request; and one more for the HTTPS
    # the client tries first on a registry that may be insecure.
    assert 2 <= relay.accepted <= 9, relay.accepted


@pytest.fixture
def closes_second_request() -> Iterator[tuple[str, list[int]]]:
    """Answers the first request on each connection and closes the connection, unanswered,
    when a second one comes: a peer that ended a kept connection just as it was reused."""
    connections: list[int] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def setup(self) -> None:
            super().setup()
            connections.append(0)
            self.index = len(connections) - 1

        def do_HEAD(self) -> None:
            connections[self.index] += 1
            if connections[self.index] > 1:
                self.close_connection = True
                return
            self.send_response(200)
            self.send_header("Docker-Content-Digest", "sha256:" + "a" * 64)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_HEAD

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", connections
    finally:
        server.shutdown()
        server.server_close()


def test_a_kept_connection_closed_by_the_peer_is_retried_on_a_new_one(
        closes_second_request: tuple[str, list[int]]) -> None:
    address, connections = closes_second_request
    c = client()
    fds = len(os.listdir("/proc/self/fd"))
    try:
        digests = [c.head_digest(address, "app", f"v{i}") for i in range(1000)]
        assert len(os.listdir("/proc/self/fd")) <= fds + 2  # no connection left behind
    finally:
        c.close()
    assert digests == ["sha256:" + "a" * 64] * 1000
    # The /v2/ ping and 1,000 HEADs: each connection's second request was cut off and sent
    # again on a new connection, and no request failed for it. (The first connection is
    # the client trying HTTPS, as it does first on a registry that may be insecure.)
    spoken = [n for n in connections if n]
    assert len(spoken) == 1001, len(spoken)
    assert all(n in (1, 2) for n in spoken), connections
    requests = dict(((m, code), n) for (_, m, code), n in c.counters().requests)
    assert requests == {("GET", "200"): 1, ("HEAD", "200"): 1000}, requests
