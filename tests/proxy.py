"""A counting, delaying proxy in front of the real Docker socket.

Not a stand-in: every request is forwarded to the real dockerd. It lets tests see exactly
which Engine API calls the exporter makes, and make chosen endpoints slow.
"""

from __future__ import annotations

import http.client
import socket
import socketserver
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler
from pathlib import Path


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


class EngineProxy:
    def __init__(self, upstream: Path, listen: Path) -> None:
        self.upstream = str(upstream)
        self.listen = listen
        self.counts: Counter[str] = Counter()
        self.delays: dict[str, float] = {}
        self.in_flight: Counter[str] = Counter()
        self.max_in_flight: Counter[str] = Counter()
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def address_string(self) -> str:
                return "unix"

            def do_GET(self) -> None:
                endpoint = proxy.endpoint(self.path)
                with proxy._lock:
                    proxy.counts[f"{self.command} {endpoint}"] += 1
                    proxy.in_flight[endpoint] += 1
                    proxy.max_in_flight[endpoint] = max(proxy.max_in_flight[endpoint],
                                                        proxy.in_flight[endpoint])
                try:
                    time.sleep(proxy.delays.get(endpoint, 0))
                    conn = _UnixConnection(proxy.upstream, timeout=120)
                    body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                    headers = {k: v for k, v in self.headers.items()
                               if k.lower() not in ("connection", "content-length")}
                    conn.request(self.command, self.path, body or None, headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    self.send_response(resp.status)
                    for key, value in resp.getheaders():
                        if key.lower() not in ("transfer-encoding", "content-length",
                                               "connection"):
                            self.send_header(key, value)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(data)
                    conn.close()
                finally:
                    with proxy._lock:
                        proxy.in_flight[endpoint] -= 1

            do_HEAD = do_POST = do_DELETE = do_PUT = do_GET

        class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
            daemon_threads = True

        self.server = Server(str(listen), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @staticmethod
    def endpoint(path: str) -> str:
        """/v1.41/images/sha256:abc/json -> /images/{id}/json"""
        parts = path.partition("?")[0].split("/")
        if len(parts) > 1 and parts[1].startswith("v1."):
            parts = ["", *parts[2:]]
        if len(parts) == 4 and parts[1] in ("images", "containers") and parts[3] == "json":
            parts[2] = "{id}"
        return "/".join(parts)

    @property
    def host(self) -> str:
        return f"unix://{self.listen}"

    def start(self) -> EngineProxy:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
