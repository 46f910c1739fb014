"""The HTTP server: metrics, health, readiness, pages and the Distribution webhook.

A scrape renders what the background loops last read; nothing here calls Docker.

Why asyncio and h11 rather than ``http.server``: a ``ThreadingHTTPServer`` gives every
connection a thread and every read its own timeout, so a client sending a byte a second holds
a thread and a descriptor for as long as it likes, and a few hundred such clients starve the
scrapes. Here one event loop, in the main thread, accepts every connection and reads every
request: a slow client costs a socket and a few KiB, not a thread. Its deadline is one
timeout around the whole request (TLS handshake, request line, headers and body), not a
timeout per read. h11 (a sans-I/O HTTP/1.1 parser, already a dependency of httpx) does the
framing. What costs CPU or may block (rendering ``/metrics``, bcrypt, pages, the webhook)
runs on a pool of ``WORKERS`` threads, so the loop goes on accepting and reading while a
scrape renders. A hand-written selectors loop would also have needed its own non-blocking
TLS handshake; asyncio's transports have one, with a timeout.

Limits, all enforced before authentication:

- ``REQUEST_TIMEOUT`` for a whole request, from the connection (or the end of the previous
  response on a kept-alive one) to the last byte of its body; ``RESPONSE_TIMEOUT`` for the
  client to read the answer.
- ``MAX_HEADER_BYTES`` for the request line and headers: the server never reads more than
  that before the headers end; past it the answer is 431 and the connection closes. A request
  line longer than ``MAX_REQUEST_LINE`` is 414, more than ``MAX_HEADERS`` headers 431.
- A cap on open connections, from the file limit (raised to the hard limit at start, as Go
  does) less a reserve for the rest of the process. At the cap, a new connection closes the
  one that has waited longest for its request, so slow or idle clients cannot lock scrapes
  out.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import http
import logging
import resource
import signal
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from email.utils import formatdate
from typing import Any, TypeVar

import h11
from prometheus_client.exposition import choose_encoder

from exporter import __version__
from exporter.app import Exporter
from exporter.web import pages
from exporter.web.webconfig import WebConfig, WebConfigWatcher

log = logging.getLogger(__name__)

REQUEST_TIMEOUT = 10.0  # seconds for a whole request: TLS handshake, headers and body
RESPONSE_TIMEOUT = 30.0  # seconds a client may take to read a response
MAX_REQUEST_LINE = 8192
MAX_HEADER_BYTES = 16 * 1024  # request line and headers together
MAX_HEADERS = 100
MAX_WEBHOOK_BODY = 1024 * 1024
MAX_CONNECTIONS = 1024  # an exporter has a few scrapers; this bounds memory, not the file limit
RESERVED_FILES = 128  # descriptors left for Docker, registries, the state store and logs
WORKERS = 4
BACKLOG = 4096  # the kernel caps it at net.core.somaxconn
ACCEPT_BATCH = 32  # accepts per wake-up; the reserve covers them while evictions close
LINGER = 0.5  # seconds, and bytes, read and thrown away after a refusal
LINGER_BYTES = 4 * 1024 * 1024
CHUNK = 64 * 1024  # read buffer
# A response body is handed to the transport in slices of this size, waiting while the client
# does not read: a slow client holds at most one slice of copies. In 64 KiB slices, 15 of 400
# back-to-back scrapes of a 0.9 MB body (2,000 tags) took 40 ms more on loopback; in 256 KiB
# slices, 1 of 400.
WRITE_SLICE = 256 * 1024
SERVER = f"docker-hygiene-exporter/{__version__}"
T = TypeVar("T")


def raise_file_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit, as Go's runtime does at start, and
    return the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    return soft


def connection_cap(file_limit: int) -> int:
    if file_limit == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS
    return max(16, min(MAX_CONNECTIONS, file_limit - RESERVED_FILES))


@dataclass(frozen=True)
class Request:
    method: str
    target: str
    headers: dict[str, str]  # lower-case names; the first value of a repeated header

    @property
    def path(self) -> str:
        return self.target.partition("?")[0]

    def header(self, name: str) -> str:
        return self.headers.get(name, "")


@dataclass(frozen=True)
class Reply:
    code: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()
    close: bool = False


def _text(code: int, text: str, *headers: tuple[str, str], close: bool = False) -> Reply:
    return Reply(code, text.encode(), headers=headers, close=close)


class Server:
    """Binds at construction (so the caller can report an address in use); ``run`` serves
    until a stop signal arrives."""

    def __init__(self, exporter: Exporter) -> None:
        self.exporter = exporter
        path = exporter.config.web_config_file
        self.web = WebConfigWatcher(path) if path else None
        self.cap = connection_cap(raise_file_limit())
        host, port = exporter.config.listen()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.listener.bind((host, port))
            self.listener.listen(BACKLOG)
        except OSError:
            self.listener.close()
            raise
        self.listener.setblocking(False)
        self.buffer = memoryview(bytearray(CHUNK))  # one loop thread reads into it at a time
        self.pool = concurrent.futures.ThreadPoolExecutor(WORKERS, thread_name_prefix="http")
        self.connections: set[asyncio.Task[None]] = set()
        # Connections waiting for a request, oldest first: the first to go at the cap.
        self.waiting: dict[asyncio.Task[None], None] = {}
        self._warned: dict[str, float] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def web_config(self) -> WebConfig:
        return self.web.get() if self.web else WebConfig()

    # The loop

    def run(self, stop_signals: Iterable[signal.Signals]) -> signal.Signals:
        """Serve in this (the main) thread until one of ``stop_signals``; return it.

        The loop's signal handling wakes it through a pipe whatever thread the kernel
        delivered the signal to; a main thread asleep in ``Event.wait`` may not wake."""
        loop = asyncio.new_event_loop()
        self._loop = loop
        loop.set_exception_handler(_log_loop_error)
        stopped: asyncio.Future[signal.Signals] = loop.create_future()
        for signum in stop_signals:
            loop.add_signal_handler(signum, _set_once, stopped, signum)
        loop.add_reader(self.listener.fileno(), self._accept)
        try:
            return loop.run_until_complete(stopped)
        finally:
            loop.remove_reader(self.listener.fileno())
            self.listener.close()
            for task in self.connections:
                task.cancel()
            self.pool.shutdown(wait=False, cancel_futures=True)

    def _accept(self) -> None:
        assert self._loop is not None
        for _ in range(ACCEPT_BATCH):
            try:
                sock, address = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:
                # Out of descriptors or memory despite the cap: wait a little, then go on.
                self._warn_rarely("accept", "cannot accept connections: %s",
                                  exc.strerror or exc)
                self._loop.remove_reader(self.listener.fileno())
                self._loop.call_later(0.1, self._loop.add_reader, self.listener.fileno(),
                                      self._accept)
                return
            if len(self.connections) >= self.cap and not self._evict():
                sock.close()  # every connection is busy with a request: refuse this one
                continue
            sock.setblocking(False)
            task = self._loop.create_task(self._connection(sock, _peer(address)))
            self.connections.add(task)
            self.waiting[task] = None
            task.add_done_callback(self._gone)

    def _evict(self) -> bool:
        """Close the connection that has waited longest for its request."""
        if not self.waiting:
            return False
        self._warn_rarely("cap", "%d connections open, the limit: closing those that have "
                          "waited longest for their request", self.cap)
        oldest = next(iter(self.waiting))
        del self.waiting[oldest]
        oldest.cancel()
        return True

    def _warn_rarely(self, kind: str, message: str, *args: object) -> None:
        """At most once a minute: under attack these would otherwise flood the log."""
        now = time.monotonic()
        if now - self._warned.get(kind, -60.0) >= 60:
            self._warned[kind] = now
            log.warning(message, *args)

    def _gone(self, task: asyncio.Task[None]) -> None:
        self.connections.discard(task)
        self.waiting.pop(task, None)

    async def _connection(self, sock: socket.socket, peer: str) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + REQUEST_TIMEOUT
        conn: _Connection | None = None
        try:
            tls = self.web_config().tls  # in force now: certificates rotate
            try:
                async with asyncio.timeout_at(deadline):
                    _, conn = await loop.connect_accepted_socket(
                        lambda: _Connection(self, peer, tls is not None), sock, ssl=tls,
                        ssl_handshake_timeout=REQUEST_TIMEOUT if tls else None,
                        ssl_shutdown_timeout=5.0 if tls else None)
            except (OSError, TimeoutError) as exc:  # ssl.SSLError is an OSError
                log.debug("TLS handshake with %s failed: %r", peer, exc)
                return
            await conn.serve(deadline)
            await conn.close()
        except asyncio.CancelledError:
            log.debug("closed %s: at the connection limit, or shutting down", peer)
        except Exception:
            log.error("connection from %s failed", peer, exc_info=True)
        finally:
            if conn is not None:
                conn.abort()  # after close(): nothing left to do
            else:
                sock.close()

    async def work(self, fn: Callable[..., T], *args: Any) -> T:
        assert self._loop is not None
        return await self._loop.run_in_executor(self.pool, fn, *args)

    # The answers, on a worker thread (the liveness probe is answered on the loop).

    def _unauthorized(self, request: Request) -> Reply | None:
        """Basic auth from the web config, for everything but the liveness probe."""
        if self.web is None or self.web.authorized(self.web.get(),
                                                   request.header("authorization") or None):
            return None
        return _text(401, "Unauthorized\n",
                     ("WWW-Authenticate", 'Basic realm="docker-hygiene-exporter"'))

    def respond(self, request: Request) -> Reply:
        """GET and HEAD, and any method but POST."""
        if (denied := self._unauthorized(request)) is not None:
            return denied
        if request.method not in ("GET", "HEAD"):
            return _text(405, "Method not allowed\n", ("Allow", "GET, HEAD"))
        exporter = self.exporter
        path = request.path
        if path == exporter.config.web_telemetry_path:
            return self._metrics(request)
        if path == "/-/ready":
            if exporter.ready:
                return _text(200, "Ready\n")
            return _text(503, "Not ready: the first read of the engine has not finished\n")
        if (page := pages.route(exporter, path)) is not None:
            return Reply(page.code, page.body, page.content_type)
        return _text(404, "Not found\n")

    def _metrics(self, request: Request) -> Reply:
        encoder, content_type = choose_encoder(request.header("accept"))
        gzipped = "gzip" in request.header("accept-encoding")
        body = self.exporter.render(
            encoder, content_type.startswith("application/openmetrics-text"), gzipped)
        if gzipped:
            return Reply(200, body, content_type, (("Content-Encoding", "gzip"),))
        return Reply(200, body, content_type)

    def admit_post(self, request: Request) -> Reply | None:
        """None when the body may be read: checked before a byte of it is."""
        if (denied := self._unauthorized(request)) is not None:
            return Reply(denied.code, denied.body, denied.content_type, denied.headers, True)
        webhook = self.exporter.webhook
        if webhook is None or request.path != self.exporter.config.webhook_distribution_path:
            return _text(405, "Method not allowed\n", ("Allow", "GET, HEAD"), close=True)
        if not webhook.authorized(request.header("authorization") or None):
            return _text(webhook.respond(401), "Unauthorized\n", close=True)
        length = request.header("content-length")
        if not length.isascii() or not length.isdigit() or int(length) > MAX_WEBHOOK_BODY:
            code = 413 if length.isascii() and length.isdigit() else 411
            return _text(webhook.respond(code), "Body too large or without Content-Length\n",
                         close=True)
        return None

    def respond_post(self, request: Request, body: bytes) -> Reply:
        webhook = self.exporter.webhook
        assert webhook is not None
        code, message = webhook.handle(request.header("authorization") or None,
                                       request.header("content-type") or None, body)
        return _text(code, message + "\n")


class _Connection(asyncio.BufferedProtocol):
    """One client: its h11 state, flow control, and the coroutine that answers it."""

    def __init__(self, server: Server, peer: str, tls: bool) -> None:
        self.server = server
        self.peer = peer
        self.tls = tls
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)
        self.transport: asyncio.Transport | None = None
        self.phase = "head"  # reading a request's head; its body; answer; discard
        self.head_bytes = 0  # bytes of this request's head read so far
        self.line = 0  # bytes of its request line so far, while it has not ended
        self.line_ended = False
        self.pending = 0  # bytes read while answering (a pipelined request)
        self.eof = False
        self.lost = False
        self.lost_error: Exception | None = None
        self.write_paused = False
        self.told_gone = False
        self.last: Request | None = None  # the request last answered, until the next begins
        self._waiter: asyncio.Future[None] | None = None

    # asyncio.BufferedProtocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if self.tls:  # asyncio's TLS layer buffers 256 KiB of ciphertext unless told otherwise
            transport.set_read_buffer_limits(high=MAX_HEADER_BYTES)

    def get_buffer(self, sizehint: int) -> memoryview:
        if self.phase == "head":  # never read past the cap: at most one byte more
            return self.server.buffer[: max(1, MAX_HEADER_BYTES + 1 - self.head_bytes)]
        return self.server.buffer

    def buffer_updated(self, nbytes: int) -> None:
        if self.phase == "discard":
            self.pending += nbytes
            if self.pending > LINGER_BYTES:
                self._pause()
                self._wake()
            return
        data = bytes(self.server.buffer[:nbytes])
        if self.phase == "head":
            self._count_head(data)
            if self.head_bytes > MAX_HEADER_BYTES:
                self._pause()
        elif self.phase == "answer":
            self.pending += nbytes
            if self.pending > MAX_HEADER_BYTES:
                self._pause()
        self.h11.receive_data(data)
        self._wake()

    def eof_received(self) -> bool:
        self.eof = True
        with contextlib.suppress(RuntimeError):
            self.h11.receive_data(b"")
        self._wake()
        return not self.tls  # a plain client that half-closed may still read the answer

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.lost_error = exc
        self._wake()

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self._wake()

    # Helpers

    def _count_head(self, data: bytes) -> None:
        self.head_bytes += len(data)
        if not self.line_ended:
            end = data.find(b"\n")
            self.line += len(data) if end < 0 else end + 1
            self.line_ended = end >= 0

    def _pause(self) -> None:
        assert self.transport is not None
        if not self.transport.is_closing():
            self.transport.pause_reading()

    def _resume(self) -> None:
        assert self.transport is not None
        if not self.transport.is_closing():
            self.transport.resume_reading()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def _wait(self) -> None:
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def abort(self) -> None:
        if self.transport is not None and not self.lost:
            self.transport.abort()

    def _went_away(self, request: Request, when: str) -> None:
        """One line per connection: a Prometheus scrape timeout ends up here."""
        if not self.told_gone:
            self.told_gone = True
            log.info("client %s went away %s the response to %s %s", self.peer, when,
                     request.method, request.path)

    # The coroutine

    async def serve(self, deadline: float) -> None:
        """Requests one at a time until the connection closes."""
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    head = await self._read_head()
            except TimeoutError:
                log.debug("%s sent no complete request within %.0f s", self.peer,
                          REQUEST_TIMEOUT)
                return
            self.server.waiting.pop(task, None)
            if head is None:
                if self.last is not None and isinstance(self.lost_error, OSError) \
                        and self.head_bytes == 0:
                    # A reset after an answer: the client closed without reading all of it.
                    self._went_away(self.last, "during")
                return
            if isinstance(head, Reply):
                await self._send(head, None)
                await self._linger()
                return
            request = Request(head.method.decode("ascii", "replace"),
                              head.target.decode("latin-1"), _headers(head.headers))
            self.last = None
            if request.method != "POST":
                # Bodies are read for the webhook only; one elsewhere is not read, and the
                # connection closes after the answer (h11 will not start a next cycle).
                with contextlib.suppress(h11.RemoteProtocolError):
                    self.h11.next_event()  # EndOfMessage, for a request without a body
            if not await self._answer(request, deadline):
                return
            self.last = request
            if self.h11.our_state is not h11.DONE or self.h11.their_state is not h11.DONE:
                if self.h11.their_state is h11.SEND_BODY:  # a body not read: refused
                    await self._linger()
                return
            self.h11.start_next_cycle()
            self._next_cycle()
            self.server.waiting[task] = None
            deadline = loop.time() + REQUEST_TIMEOUT

    def _next_cycle(self) -> None:
        self.phase = "head"
        self.pending = 0
        self.head_bytes, self.line, self.line_ended = 0, 0, False
        leftover, _ = self.h11.trailing_data  # a pipelined request already read
        self._count_head(leftover)
        if self.head_bytes <= MAX_HEADER_BYTES:
            self._resume()

    async def _read_head(self) -> h11.Request | Reply | None:
        """The next request's head; a Reply to refuse it with; None when the client left."""
        while True:
            if self.line > MAX_REQUEST_LINE:
                return _text(414, "Request line too long\n", close=True)
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError as exc:
                if self.eof or self.lost:
                    return None
                code = exc.error_status_hint
                return _text(code, f"{http.HTTPStatus(code).phrase}\n", close=True)
            if isinstance(event, h11.Request):
                if len(event.headers) > MAX_HEADERS:
                    return _text(431, "Too many headers\n", close=True)
                return event
            if event is not h11.NEED_DATA or self.lost:
                return None  # ConnectionClosed
            if self.head_bytes > MAX_HEADER_BYTES:  # h11 says so too, with the same cap
                return _text(431, "Request header fields too large\n", close=True)
            await self._wait()

    async def _answer(self, request: Request, deadline: float) -> bool:
        """Answer one request; False when the connection is done with."""
        server = self.server
        self.phase = "answer"
        try:
            if request.method in ("GET", "HEAD") and request.path == "/-/healthy":
                reply = _text(200, "Healthy\n")
            elif request.method == "POST":
                refused = await server.work(server.admit_post, request)
                if refused is None:
                    body = await self._read_body(request, deadline)
                    if body is None:
                        return False
                    self.phase = "answer"
                    reply = await server.work(server.respond_post, request, body)
                else:
                    reply = refused
            else:
                reply = await server.work(server.respond, request)
        except Exception:
            log.error("answering %s %s failed", request.method, request.path, exc_info=True)
            reply = _text(500, "Internal server error\n", close=True)
        if self.eof or self.lost:
            self._went_away(request, "before")
            if self.lost:
                return False
        return await self._send(reply, request)

    async def _read_body(self, request: Request, deadline: float) -> bytes | None:
        """The body, within the request's deadline; h11 holds it to its Content-Length."""
        if self.h11.they_are_waiting_for_100_continue:
            self._write(self.h11.send(h11.InformationalResponse(status_code=100, headers=[])))
        self.phase = "body"
        self._resume()
        body = bytearray()
        try:
            async with asyncio.timeout_at(deadline):
                while True:
                    try:
                        event = self.h11.next_event()
                    except h11.RemoteProtocolError:
                        return None
                    if isinstance(event, h11.Data):
                        body += event.data
                    elif isinstance(event, h11.EndOfMessage):
                        return bytes(body)
                    elif event is h11.NEED_DATA and not self.lost:
                        await self._wait()
                    else:
                        return None
        except TimeoutError:
            log.debug("%s sent no complete webhook body within %.0f s", self.peer,
                      REQUEST_TIMEOUT)
            return None

    async def _linger(self) -> None:
        """After a refusal, half-close and discard what the client goes on sending, for a
        moment: closing with its bytes unread would reset the connection, and the client
        would see the reset rather than the 431. Go's server does the same."""
        assert self.transport is not None
        if self.lost:
            return
        self.phase, self.pending = "discard", 0
        if self.transport.can_write_eof():  # TLS cannot half-close
            self.transport.write_eof()
        self._resume()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(LINGER):
                while not (self.lost or self.eof or self.pending > LINGER_BYTES):
                    await self._wait()

    def _write(self, data: bytes | memoryview | None) -> None:
        assert self.transport is not None
        if data and not self.lost and not self.transport.is_closing():
            self.transport.write(data)

    async def _send(self, reply: Reply, request: Request | None) -> bool:
        """Write a reply in slices, waiting while the client reads; False when it left."""
        headers = [("Server", SERVER), ("Date", formatdate(usegmt=True)),
                   ("Content-Type", reply.content_type),
                   ("Content-Length", str(len(reply.body))), *reply.headers,
                   *self.server.web_config().headers]
        if reply.close:
            headers.append(("Connection", "close"))
        try:
            self._write(self.h11.send(h11.Response(
                status_code=reply.code, reason=http.HTTPStatus(reply.code).phrase,
                headers=[(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers])))
            body = memoryview(reply.body)
            if request is None or request.method != "HEAD":
                async with asyncio.timeout(RESPONSE_TIMEOUT):
                    for start in range(0, len(body), WRITE_SLICE):
                        for piece in self.h11.send_with_data_passthrough(
                                h11.Data(data=body[start:start + WRITE_SLICE])) or ():
                            self._write(piece)
                        while self.write_paused and not self.lost:
                            await self._wait()
                        if self.lost:
                            if request is not None:
                                self._went_away(request, "during")
                            return False
            self._write(self.h11.send(h11.EndOfMessage()))
        except TimeoutError:
            log.debug("%s did not read its response within %.0f s", self.peer,
                      RESPONSE_TIMEOUT)
            self.abort()
            return False
        except (h11.LocalProtocolError, UnicodeEncodeError) as exc:
            log.error("cannot send a response to %s: %s", self.peer, exc)
            return False
        return True

    async def close(self) -> None:
        """Flush what is written, then close; a client that does not read is cut off."""
        assert self.transport is not None
        if self.lost:
            return
        self.transport.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(RESPONSE_TIMEOUT):
                while not self.lost:
                    await self._wait()


def _headers(raw: list[tuple[bytes, bytes]]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for name, value in raw:
        headers.setdefault(name.decode("latin-1"), value.decode("latin-1"))
    return headers


def _peer(address: Any) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        host = address[0]
        return f"[{host}]:{address[1]}" if ":" in host else f"{host}:{address[1]}"
    return str(address)


def _set_once(future: asyncio.Future[T], value: T) -> None:
    if not future.done():
        future.set_result(value)


def _log_loop_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """asyncio's own errors, in one line of the log format rather than a traceback."""
    exc = context.get("exception")
    log.warning("%s%s", context.get("message", "event loop error"),
                f": {exc!r}" if exc is not None else "")

