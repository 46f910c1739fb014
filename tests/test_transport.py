"""What the registry client reads, against a real HTTP server on loopback that answers
compressed: a body is never inflated (a cap counts bytes read, and a few kB of gzip can
inflate to gigabytes), and an answer it cannot read is bad_response, not a crash."""

from __future__ import annotations

import gzip
import resource
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from exporter.registry.client import RegistryClient
from exporter.registry.credentials import CredentialStore
from exporter.registry.manifest import RegistryError
from exporter.registry.policy import RequestPolicy

BOMB = gzip.compress(b"\0" * (200 * 1024 * 1024), compresslevel=9)  # 200 MB in ~200 kB


@pytest.fixture
def compressing() -> Iterator[tuple[str, list[str]]]:
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            seen.append(self.headers.get("Accept-Encoding", ""))
            body = b"{}" if self.path == "/v2/" else (
                BOMB if "bomb" in self.path else b"\x1f\x8bnot gzip at all")
            self.send_response(200)
            self.send_header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
            if self.path != "/v2/":
                self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("path", ["bomb", "garbage"])
def test_compressed_answers_are_refused_not_inflated(compressing, path: str) -> None:
    registry, seen = compressing
    policy = RequestPolicy(timeout=5)
    client = RegistryClient(CredentialStore({}, None), lambda r: True, policy)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB
    with pytest.raises(RegistryError) as err:
        client.get_manifest(registry, f"repo/{path}", "latest")
    client.close()
    assert err.value.reason == "bad_response", err.value
    assert "gzip-encoded answer, refused" in str(err.value)
    assert all(a == "identity" for a in seen), seen  # asked for it plain, every time
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak
    assert grown < 50 * 1024, f"peak RSS grew by {grown} kB"
    assert policy.blocked(registry) is None  # the answer's fault, not the registry's health
