"""The HTTP server: landing page, metrics, health and readiness.

A scrape renders what the background loops last read; nothing here calls Docker.
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client.exposition import choose_encoder

from exporter import __version__
from exporter.app import Exporter
from exporter.web import pages
from exporter.web.webconfig import WebConfig, WebConfigWatcher

log = logging.getLogger(__name__)

REQUEST_TIMEOUT = 10.0  # seconds a client may take to send its request
MAX_WEBHOOK_BODY = 1024 * 1024
MAX_REQUEST_LINE = 8192


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, exporter: Exporter) -> None:
        self.exporter = exporter
        path = exporter.config.web_config_file
        self.web = WebConfigWatcher(path) if path else None
        host, port = exporter.config.listen()
        if ":" in host:
            self.address_family = socket.AF_INET6
        super().__init__((host, port), Handler)

    def web_config(self) -> WebConfig:
        return self.web.get() if self.web else WebConfig()

    def finish_request(self, request: Any, client_address: Any) -> None:
        """TLS per connection, with the context in force now (certificates rotate)."""
        tls = self.web_config().tls
        if tls is None:
            super().finish_request(request, client_address)
            return
        request.settimeout(REQUEST_TIMEOUT)
        try:
            conn = tls.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            log.debug("TLS handshake with %s failed: %s", client_address, exc)
            return
        try:
            super().finish_request(conn, client_address)
        finally:
            with contextlib.suppress(OSError):
                conn.close()

    def serve_in_thread(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, name="http", daemon=True)
        thread.start()
        return thread


class Handler(BaseHTTPRequestHandler):
    server: Server
    timeout = REQUEST_TIMEOUT
    server_version = f"docker-hygiene-exporter/{__version__}"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def _send(self, code: int, body: bytes, content_type: str,
              headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        for key, value in self.server.web_config().headers:
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _text(self, code: int, text: str) -> None:
        self._send(code, text.encode(), "text/plain; charset=utf-8")

    def _allowed(self, path: str) -> bool:
        """Basic auth from the web config, for everything but the liveness probe."""
        if path == "/-/healthy" or self.server.web is None:
            return True
        if self.server.web.authorized(self.server.web_config(),
                                      self.headers.get("Authorization")):
            return True
        self._send(401, b"Unauthorized\n", "text/plain; charset=utf-8",
                   {"WWW-Authenticate": 'Basic realm="docker-hygiene-exporter"'})
        return False

    def parse_request(self) -> bool:
        if len(self.raw_requestline) > MAX_REQUEST_LINE:
            self.command, self.request_version, self.requestline = "GET", "HTTP/1.0", ""
            self.close_connection = True
            self.send_error(414)
            return False
        return super().parse_request()

    def do_GET(self) -> None:
        exporter = self.server.exporter
        path = self.path.partition("?")[0]
        if not self._allowed(path):
            return
        if path == exporter.config.web_telemetry_path:
            self._metrics()
        elif (page := pages.route(exporter, path)) is not None:
            self._send(page.code, page.body, page.content_type)
        elif path == "/-/healthy":
            self._text(200, "Healthy\n")
        elif path == "/-/ready":
            if exporter.ready:
                self._text(200, "Ready\n")
            else:
                self._text(503, "Not ready: the first read of the engine has not finished\n")
        else:
            self._text(404, "Not found\n")

    do_HEAD = do_GET

    def _unsupported(self) -> None:
        self._send(405, b"Method not allowed\n", "text/plain; charset=utf-8",
                   {"Allow": "GET, HEAD"})

    def do_POST(self) -> None:
        webhook = self.server.exporter.webhook
        path = self.path.partition("?")[0]
        if not self._allowed(path):
            self.close_connection = True
            return
        if webhook is None or path != self.server.exporter.config.webhook_distribution_path:
            self._unsupported()
            return
        if not webhook.authorized(self.headers.get("Authorization")):
            # Checked before the body is read: a stranger's body is never parsed.
            self.close_connection = True
            self._text(webhook.respond(401), "Unauthorized\n")
            return
        try:
            length = int(self.headers.get("Content-Length") or -1)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_WEBHOOK_BODY:
            self.close_connection = True
            self._text(webhook.respond(413 if length > MAX_WEBHOOK_BODY else 411),
                       "Body too large or without Content-Length\n")
            return
        body = self.rfile.read(length)
        code, message = webhook.handle(self.headers.get("Authorization"),
                                       self.headers.get("Content-Type"), body)
        self._text(code, message + "\n")

    do_PUT = do_DELETE = do_PATCH = _unsupported

    def _metrics(self) -> None:
        encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
        body = self.server.exporter.render(
            encoder, content_type.startswith("application/openmetrics-text"))
        headers = {}
        if "gzip" in self.headers.get("Accept-Encoding", ""):
            body = gzip.compress(body, compresslevel=1)
            headers["Content-Encoding"] = "gzip"
        self._send(200, body, content_type, headers)
