"""Registries that misbehave: a proxy in front of a real CNCF Distribution registry that, for
requests from the exporter (by User-Agent), trickles, loops, lies or says 429. Everyone
else (dockerd pulling during set-up) gets the real registry's answers.

Modes:
- ``pass``: the real registry's answers;
- ``trickle``: the real answer, one byte every ``trickle_seconds``;
- ``endless_link``: tag lists always answer with a ``Link`` to the same next page;
- ``429``: ``429 Too Many Requests`` with ``Retry-After: 3600`` to everything;
- ``huge``: manifest GETs answer 50 MB (and HEADs carry no digest, so a GET follows);
- ``redirect_loop``: every request is redirected to itself;
- ``invalid_json``: a manifest that is not JSON, under the very digest the HEAD announced
  (so the digest check passes and the parser is what must cope);
- ``bogus_digest``: HEADs announce a well-formed digest of other bytes; GETs of it answer
  the real manifest, which does not match it.
"""

from __future__ import annotations

import hashlib
import http.client
import re
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.registries import EXPORTER_UA
from tests.services import free_port

GARBAGE = b"\x00{this is not json" * 64
GARBAGE_DIGEST = "sha256:" + hashlib.sha256(GARBAGE).hexdigest()
BOGUS_DIGEST = "sha256:" + hashlib.sha256(b"bytes nobody serves").hexdigest()
HUGE = 50 * 1024 * 1024


class HostileRegistry:
    def __init__(self, upstream_port: int, mode: str = "pass") -> None:
        self.upstream_port = upstream_port
        self.mode = mode
        self.trickle_seconds = 0.5
        self.port = free_port()
        self.counts: Counter[tuple[str, str]] = Counter()  # (method, path) from the exporter
        self.sent_bytes = 0
        self._lock = threading.Lock()
        hostile = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _upstream(self, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
                conn = http.client.HTTPConnection("127.0.0.1", hostile.upstream_port,
                                                  timeout=60)
                # Every header as sent, repeated ones included: clients send one Accept per
                # media type, and a registry answers by what the last one of a dict says.
                conn.putrequest(self.command, self.path, skip_host=True,
                                skip_accept_encoding=True)
                for k, v in self.headers.items():
                    if k.lower() not in ("transfer-encoding", "content-length", "connection"):
                        conn.putheader(k, v)
                conn.putheader("Content-Length", str(len(body)))
                conn.endheaders(body)
                resp = conn.getresponse()
                data = resp.read()
                conn.close()
                out = [(k, v) for k, v in resp.getheaders()
                       if k.lower() not in ("transfer-encoding", "content-length",
                                            "connection")]
                return resp.status, out, data

            def _head_bytes(self, code: int, headers: list[tuple[str, str]],
                            length: int) -> bytes:
                lines = [f"HTTP/1.1 {code} {http.client.responses.get(code, 'Status')}"]
                lines += [f"{k}: {v}" for k, v in headers]
                lines.append(f"Content-Length: {length}")
                return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

            def _write(self, data: bytes) -> None:
                self.wfile.write(data)
                with hostile._lock:
                    hostile.sent_bytes += len(data)

            def _answer(self, code: int, headers: list[tuple[str, str]], body: bytes,
                        length: int | None = None) -> None:
                send_body = self.command != "HEAD"
                raw = self._head_bytes(code, headers, len(body) if length is None else length)
                if send_body:
                    raw += body
                self._write(raw)

            def _body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def handle_any(self) -> None:
                body = self._body()
                ours = self.headers.get("User-Agent", "").startswith(EXPORTER_UA)
                path = self.path.split("?")[0]
                if ours:
                    with hostile._lock:
                        hostile.counts[(self.command, path)] += 1
                mode = hostile.mode if ours else "pass"
                manifest = "/manifests/" in path
                try:
                    if mode == "429":
                        self._answer(429, [("Retry-After", "3600"),
                                           ("Content-Type", "application/json")],
                                     b'{"errors":[{"code":"TOOMANYREQUESTS"}]}')
                    elif mode == "redirect_loop":
                        self._answer(307, [("Location", self.path)], b"")
                    elif mode == "trickle":
                        code, headers, data = self._upstream(body)
                        raw = self._head_bytes(code, headers, len(data))
                        if self.command != "HEAD":
                            raw += data
                        for i in range(len(raw)):
                            self._write(raw[i:i + 1])
                            self.wfile.flush()
                            time.sleep(hostile.trickle_seconds)
                    elif mode == "endless_link" and re.fullmatch(r"/v2/.+/tags/list", path):
                        code, headers, data = self._upstream(body)
                        repo = path[len("/v2/"):-len("/tags/list")]
                        headers = [(k, v) for k, v in headers if k.lower() != "link"]
                        headers.append(("Link", f'</v2/{repo}/tags/list?last=0&n=1000>; '
                                                'rel="next"'))
                        self._answer(code, headers, data)
                    elif mode == "huge" and manifest:
                        self._huge()
                    elif mode == "invalid_json" and manifest:
                        headers = [("Docker-Content-Digest", GARBAGE_DIGEST),
                                   ("Content-Type",
                                    "application/vnd.docker.distribution.manifest.v2+json")]
                        self._answer(200, headers, GARBAGE)
                    elif mode == "bogus_digest" and manifest:
                        code, headers, data = self._upstream_by_tag_or_real(body)
                        if self.command == "HEAD":
                            headers = [(k, v) for k, v in headers
                                       if k.lower() != "docker-content-digest"]
                            headers.append(("Docker-Content-Digest", BOGUS_DIGEST))
                        self._answer(code, headers, data)
                    else:
                        code, headers, data = self._upstream(body)
                        if self.command == "HEAD":
                            declared = next((v for k, v in headers
                                             if k.lower() == "content-length"), None)
                            self._answer(code, headers, b"", int(declared or len(data)))
                        else:
                            self._answer(code, headers, data)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True

            def _upstream_by_tag_or_real(self, body: bytes
                                         ) -> tuple[int, list[tuple[str, str]], bytes]:
                # A GET of the bogus digest answers what the tag really names: bytes that
                # do not hash to the digest asked for.
                if BOGUS_DIGEST in self.path:
                    self.path = re.sub(r"/manifests/.*$", "/manifests/" + hostile.real_tag,
                                       self.path)
                return self._upstream(body)

            def _huge(self) -> None:
                headers = [("Content-Type",
                            "application/vnd.docker.distribution.manifest.v2+json")]
                self._write(self._head_bytes(200, headers, HUGE))
                if self.command == "HEAD":
                    return
                chunk = b" " * 65536
                for _ in range(HUGE // len(chunk)):
                    self._write(chunk)

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = handle_any

        self.real_tag = "latest"
        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def requests(self) -> int:
        with self._lock:
            return sum(self.counts.values())

    def start(self) -> HostileRegistry:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
