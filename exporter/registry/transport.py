"""HTTP clients whose requests end at a wall-clock deadline, whatever the peer does.

httpx's timeouts apply to each read: a server that trickles one byte a second never trips
them, and holds the request as long as it likes. Here every socket operation (connect,
TLS handshake, each read and write) is given at most the time left before the deadline of
the request in progress, so connect, headers and body together end on time. The deadline
is set around a request with ``deadline(seconds)``; it belongs to the calling thread's
context, which is where httpx's synchronous client does its I/O.

Registry requests (``Http``) go over the standard library's http.client, whose sockets
(``_Socket``, ``_TLSSocket``) obey the same deadline; the Docker Hub and Harbor APIs use an
``httpx.Client`` (``client``).
"""

from __future__ import annotations

import contextlib
import contextvars
import http.client
import select
import socket
import ssl
import threading
import time
import typing
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpcore
import httpx

from exporter import __version__

USER_AGENT = f"docker-hygiene-exporter/{__version__}"

# The deadline (time.monotonic()) of the request this context is making; None: no deadline.
_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "docker_hygiene_request_deadline", default=None)


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[float]:
    """Every socket operation inside ends by ``seconds`` from now (nested: the earlier)."""
    now = time.monotonic()
    outer = _deadline.get()
    when = now + seconds if outer is None else min(outer, now + seconds)
    token = _deadline.set(when)
    try:
        yield when
    finally:
        _deadline.reset(token)


def _left(timeout: float | None, error: type[Exception]) -> float | None:
    when = _deadline.get()
    if when is None:
        return timeout
    left = when - time.monotonic()
    if left <= 0:
        raise error("deadline exceeded")
    return left if timeout is None else min(timeout, left)


class _Stream(httpcore.NetworkStream):
    def __init__(self, stream: httpcore.NetworkStream) -> None:
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _left(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, _left(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        return _Stream(self._stream.start_tls(ssl_context, server_hostname,
                                              _left(timeout, httpcore.ConnectTimeout)))

    def get_extra_info(self, info: str) -> typing.Any:
        return self._stream.get_extra_info(info)


class _Backend(httpcore.NetworkBackend):
    def __init__(self) -> None:
        self._backend = httpcore.SyncBackend()

    def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                    local_address: str | None = None,
                    socket_options: typing.Iterable[typing.Any] | None = None
                    ) -> httpcore.NetworkStream:
        return _Stream(self._backend.connect_tcp(
            host, port, _left(timeout, httpcore.ConnectTimeout), local_address, socket_options))

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: typing.Iterable[typing.Any] | None = None
                            ) -> httpcore.NetworkStream:
        return _Stream(self._backend.connect_unix_socket(
            path, _left(timeout, httpcore.ConnectTimeout), socket_options))

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


IDLE_SECONDS = 60.0  # an idle connection is kept this long (registries keep theirs longer)


class _Socket(socket.socket):
    """Each send and receive (http.client reads through ``makefile``, which comes here) is
    given at most the time left before the deadline, and at most ``limit`` seconds."""

    limit: float | None = None

    def recv_into(self, buffer: typing.Any, nbytes: int = 0, flags: int = 0) -> int:
        self.settimeout(_left(self.limit, TimeoutError))
        return super().recv_into(buffer, nbytes, flags)

    def sendall(self, data: typing.Any, flags: int = 0) -> None:
        self.settimeout(_left(self.limit, TimeoutError))
        super().sendall(data, flags)


class _TLSSocket(ssl.SSLSocket):
    """``_Socket`` for TLS: the context makes these (``sslsocket_class``)."""

    limit: float | None = None

    def recv_into(self, buffer: typing.Any, nbytes: int | None = None, flags: int = 0) -> int:
        self.settimeout(_left(self.limit, TimeoutError))
        return super().recv_into(buffer, nbytes, flags)  # type: ignore[arg-type]

    def sendall(self, data: typing.Any, flags: int = 0) -> None:
        self.settimeout(_left(self.limit, TimeoutError))
        super().sendall(data, flags)


def _connect(host: str, port: int, limit: float) -> _Socket:
    last: OSError | None = None
    for family, kind, proto, _, address in socket.getaddrinfo(host, port, 0,
                                                              socket.SOCK_STREAM):
        sock = _Socket(family, kind, proto)
        sock.limit = limit
        try:
            sock.settimeout(_left(limit, TimeoutError))
            sock.connect(address)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return sock
        except OSError as exc:
            sock.close()
            last = exc
    raise last or OSError(f"{host}: no address")


class _Plain(http.client.HTTPConnection):
    def __init__(self, host: str, port: int | None, limit: float) -> None:
        super().__init__(host, port)
        self.limit = limit
        self.idle_since = 0.0

    def connect(self) -> None:
        self.sock = _connect(self.host, self.port, self.limit)


class _TLS(_Plain):
    default_port = 443

    def __init__(self, host: str, port: int | None, limit: float,
                 context: ssl.SSLContext) -> None:
        super().__init__(host, port, limit)
        self.context = context

    def connect(self) -> None:
        sock = _connect(self.host, self.port, self.limit)
        try:
            sock.settimeout(_left(self.limit, TimeoutError))  # the handshake's
            tls = self.context.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise
        tls.limit = self.limit
        self.sock = tls


@dataclass(frozen=True)
class Answer:
    """A registry's whole answer: what the registry client reads of it."""

    status_code: int
    headers: Mapping[str, str]  # names in lower case; a repeated header's values joined by ", "
    content: bytes


class Http:
    """Registry requests on the standard library's http.client, over kept connections.

    One HEAD costs about a third of the CPU it cost through ``httpx.Client`` with its pool
    (0.36 against 0.93 ms, BENCHMARKS.md section 7): at registry speeds httpx's and
    httpcore's request and response models were most of the work, and httpcore's pool
    looked at every connection it held on every request. Up to ``connections`` idle
    connections are kept per origin, the newest used first; how many requests run at once
    is the request policy's business.
    Thread-safe.
    """

    def __init__(self, timeout: float, verify: bool = True, connections: int = 16) -> None:
        self.timeout = timeout  # per socket operation, should a request run outside deadline()
        self._context = httpx.create_ssl_context(verify=verify)
        self._context.sslsocket_class = _TLSSocket
        self._max_idle = connections
        self._idle: dict[tuple[str, str, int | None], list[_Plain]] = {}
        self._lock = threading.Lock()
        self._closed = False

    def _take(self, key: tuple[str, str, int | None]) -> _Plain | None:
        now = time.monotonic()
        while True:
            with self._lock:
                idle = self._idle.get(key)
                if not idle:
                    return None
                connection = idle.pop()
            if now - connection.idle_since < IDLE_SECONDS and not _readable(connection.sock):
                return connection
            connection.close()  # idle too long, or the peer closed it (readable: at EOF)

    def _give_back(self, key: tuple[str, str, int | None], connection: _Plain) -> None:
        connection.idle_since = time.monotonic()
        with self._lock:
            idle = self._idle.setdefault(key, [])
            if not self._closed and len(idle) < self._max_idle:
                idle.append(connection)
                return
        connection.close()

    def request(self, method: str, url: str, headers: Mapping[str, str],
                max_bytes: int) -> Answer:
        """One request; its body read while it streams, at most ``max_bytes`` of it (TooLarge
        beyond). Raises httpx's transport errors (httpx.TimeoutException, ...)."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise httpx.UnsupportedProtocol(f"cannot request {url!r}")
        key = (parts.scheme, parts.hostname, parts.port)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        sent = {"User-Agent": USER_AGENT, **headers}
        connection = self._take(key)
        if connection is not None:
            try:
                return self._exchange(key, connection, method, target, sent, max_bytes)
            except _Unsent:
                pass  # the peer closed a kept connection as it was reused: on a new one
        connection = _TLS(parts.hostname, parts.port, self.timeout, self._context) \
            if parts.scheme == "https" else _Plain(parts.hostname, parts.port, self.timeout)
        try:
            connection.connect()
        except TimeoutError as exc:
            connection.close()
            raise httpx.ConnectTimeout(f"connect to {parts.hostname}: timed out") from exc
        except OSError as exc:  # refused, unreachable, TLS (ssl.SSLError is an OSError)
            connection.close()
            raise httpx.ConnectError(str(exc) or type(exc).__name__) from exc
        try:
            return self._exchange(key, connection, method, target, sent, max_bytes)
        except _Unsent as exc:
            raise httpx.RemoteProtocolError(str(exc.__cause__)) from exc.__cause__

    def _exchange(self, key: tuple[str, str, int | None], connection: _Plain, method: str,
                  target: str, headers: dict[str, str], max_bytes: int) -> Answer:
        kept = False
        try:
            try:
                connection.request(method, target, headers=headers)
                response = connection.getresponse()
            except (http.client.RemoteDisconnected, BrokenPipeError,
                    ConnectionResetError) as exc:
                raise _Unsent() from exc  # not a byte of an answer: safe to send again
            fields: dict[str, str] = {}
            for name, value in response.getheaders():
                name = name.lower()
                fields[name] = f"{fields[name]}, {value}" if name in fields else value
            body = _capped(method, connection.host, fields, _read(response, max_bytes),
                           max_bytes)
            kept = not response.will_close
        except (_Unsent, TooLarge):
            raise
        except TimeoutError as exc:
            raise httpx.ReadTimeout(f"{connection.host}: no whole answer in time") from exc
        except http.client.HTTPException as exc:
            raise httpx.RemoteProtocolError(f"{connection.host}: {exc!r}") from exc
        except OSError as exc:
            raise httpx.ReadError(f"{connection.host}: {exc}") from exc
        finally:
            if not kept:
                connection.close()
        self._give_back(key, connection)
        return Answer(response.status, fields, body)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            connections = [c for idle in self._idle.values() for c in idle]
            self._idle.clear()
        for connection in connections:
            connection.close()


class _Unsent(Exception):
    """The peer closed the connection before any answer."""


def _readable(sock: socket.socket | None) -> bool:
    """An idle connection's socket has something to read: the peer closed it (or broke the
    protocol); either way it is not reused."""
    if sock is None:
        return True
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


def _capped(method: str, host: str, headers: Mapping[str, str], chunks: Iterable[bytes],
            max_bytes: int) -> bytes:
    """The body, read while it streams; TooLarge beyond ``max_bytes`` (the rest never read,
    so a huge answer costs at most ``max_bytes`` of memory) or when it is compressed
    although we asked for it plain (inflating it is what a cap cannot bound)."""
    if method == "HEAD":
        # Its Content-Length is that of the body a GET would get. The empty body is still
        # read to its end: a response closed before that closes its connection too.
        for _ in chunks:
            pass
        return b""
    encoding = headers.get("content-encoding", "identity").strip().lower()
    if encoding != "identity":
        raise TooLarge(f"{host}: a {encoding}-encoded answer, refused")
    declared = headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > max_bytes:
        raise TooLarge(f"{method} {host}: body over {max_bytes} bytes")
    parts, size = [], 0
    for chunk in chunks:
        size += len(chunk)
        if size > max_bytes:
            raise TooLarge(f"{method} {host}: body over {max_bytes} bytes")
        parts.append(chunk)
    return b"".join(parts)


def _read(response: http.client.HTTPResponse, max_bytes: int) -> Iterator[bytes]:
    """An http.client body in chunks, never reading more than one byte past ``max_bytes``."""
    size = 0
    while chunk := response.read(min(_CHUNK, max_bytes + 1 - size)):
        size += len(chunk)
        yield chunk


_CHUNK = 256 * 1024


def client(timeout: float, verify: bool = True, connections: int = 16,
           headers: dict[str, str] | None = None) -> httpx.Client:
    """An httpx client whose requests obey ``deadline()``; no redirects, no proxies from the
    environment (traffic goes where the configuration says, nowhere else). For the Docker
    Hub and Harbor APIs; registry requests go through ``Http``."""
    transport = httpx.HTTPTransport(
        verify=verify, limits=httpx.Limits(max_connections=connections * 4,
                                           max_keepalive_connections=connections * 2))
    # httpx builds its connection pool with the default socket backend and has no parameter
    # for another; the deadline tests fail loudly if a new httpx stops honouring this.
    transport._pool._network_backend = _Backend()
    # Bodies uncompressed: a cap counts what is read, and a few kB of gzip may inflate to
    # gigabytes before any cap could count them.
    return httpx.Client(transport=transport, timeout=timeout, follow_redirects=False,
                        trust_env=False, headers={"User-Agent": USER_AGENT,
                                                  "Accept-Encoding": "identity",
                                                  **(headers or {})})


def why(exc: BaseException | None) -> str:
    """The innermost reason of a transport failure, e.g. "[Errno 111] Connection refused"."""
    seen = 0
    while exc is not None and exc.__cause__ is not None and seen < 10:
        exc, seen = exc.__cause__, seen + 1
    if exc is None:
        return "unknown error"
    return str(exc) or type(exc).__name__


class TooLarge(Exception):
    """An answer's body was larger than the caller accepts."""


def fetch(http: httpx.Client, method: str, url: str, max_bytes: int,
          **kwargs: typing.Any) -> httpx.Response:
    """One request whose body is read while it streams, at most ``max_bytes`` of it (raising
    TooLarge beyond: the rest is never read), as a complete response."""
    with http.stream(method, url, **kwargs) as response:
        body = _capped(method, response.request.url.host, response.headers,
                       response.iter_raw(), max_bytes)
    return httpx.Response(response.status_code, headers=response.headers, content=body,
                          request=response.request)
