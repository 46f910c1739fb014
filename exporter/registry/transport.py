"""HTTP clients whose requests end at a wall-clock deadline, whatever the peer does.

httpx's timeouts apply to each read: a server that trickles one byte a second never trips
them, and holds the request as long as it likes. Here every socket operation (connect,
TLS handshake, each read and write) is given at most the time left before the deadline of
the request in progress, so connect, headers and body together end on time. The deadline
is set around a request with ``deadline(seconds)``; it belongs to the calling thread's
context, which is where httpx's synchronous client does its I/O.

Registry requests go straight to httpcore (``Http``) through a pool of kept connections
(``_Pool``); the Docker Hub and Harbor APIs use an ``httpx.Client`` on the same pool.
"""

from __future__ import annotations

import contextlib
import contextvars
import ssl
import threading
import time
import typing
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

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


class _Pool:
    """Idle keep-alive connections per origin, the newest taken first: O(1) a request.

    httpcore's own pool looks at every connection it holds on every request (measured: half
    a millisecond of CPU a HEAD with 32 connections to one registry, more than the rest of
    the request). How many requests run at once is the request policy's business, so this
    pool only keeps up to ``idle`` connections per origin for the next request; HTTP/1.1
    itself stays httpcore's (``HTTPConnection``).
    """

    def __init__(self, ssl_context: ssl.SSLContext, idle: int) -> None:
        self._ssl_context = ssl_context
        self._max_idle = idle
        # (scheme, host, port) -> idle connections, the newest last
        self._idle: dict[tuple[bytes, bytes, int], list[httpcore.HTTPConnection]] = {}
        self._lock = threading.Lock()
        self._closed = False

    def _take(self, origin: httpcore.Origin) -> httpcore.HTTPConnection | None:
        key = (origin.scheme, origin.host, origin.port)
        while True:
            with self._lock:
                idle = self._idle.get(key)
                if not idle:
                    return None
                connection = idle.pop()
            if connection.is_idle() and not connection.has_expired():
                return connection
            connection.close()  # the peer closed it, or it idled too long

    def _give_back(self, connection: httpcore.HTTPConnection) -> None:
        if connection.is_idle() and not connection.has_expired():
            origin = connection._origin
            with self._lock:
                idle = self._idle.setdefault((origin.scheme, origin.host, origin.port), [])
                if not self._closed and len(idle) < self._max_idle:
                    idle.append(connection)
                    return
        connection.close()  # not read to its end, closed by the peer, or one too many

    def _connection(self, origin: httpcore.Origin) -> httpcore.HTTPConnection:
        return httpcore.HTTPConnection(origin, ssl_context=self._ssl_context,
                                       keepalive_expiry=IDLE_SECONDS,
                                       network_backend=_Backend())

    def handle_request(self, request: httpcore.Request) -> httpcore.Response:
        origin = request.url.origin
        connection = self._take(origin)
        if connection is not None:
            try:
                response = connection.handle_request(request)
            except (httpcore.RemoteProtocolError, httpcore.ReadError, httpcore.WriteError):
                # The peer closed a kept connection as we reused it (requests here are HEADs
                # and GETs, safe to send again): once more on a new one.
                connection.close()
                connection = None
        if connection is None:
            connection = self._connection(origin)
            try:
                response = connection.handle_request(request)
            except BaseException:
                connection.close()
                raise
        return httpcore.Response(response.status, headers=response.headers,
                                 content=_Returned(response.stream, connection, self),
                                 extensions=response.extensions)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            connections = [c for idle in self._idle.values() for c in idle]
            self._idle.clear()
        for connection in connections:
            connection.close()


class _Returned(Iterable[bytes]):
    """A response body whose connection goes back to the pool when the body is closed."""

    def __init__(self, stream: Iterable[bytes], connection: httpcore.HTTPConnection,
                 pool: _Pool) -> None:
        self._stream, self._connection, self._pool = stream, connection, pool

    def __iter__(self) -> Iterator[bytes]:
        yield from self._stream

    def close(self) -> None:
        close = getattr(self._stream, "close", None)
        try:
            if close is not None:
                close()
        finally:
            self._pool._give_back(self._connection)


@dataclass(frozen=True)
class Answer:
    """A registry's whole answer: what the registry client reads of it."""

    status_code: int
    headers: Mapping[str, str]  # names in lower case; a repeated header's values joined by ", "
    content: bytes


class Http:
    """Registry requests straight on httpcore, through ``_Pool``: one HEAD costs about half
    the CPU it costs through ``httpx.Client``, whose request and response models are most of
    the work at registry speeds (BENCHMARKS.md, section 7). Thread-safe."""

    def __init__(self, timeout: float, verify: bool = True, connections: int = 16) -> None:
        self._pool = _Pool(httpx.create_ssl_context(verify=verify), connections)
        # Per socket operation, should a request run outside ``deadline()``.
        self._timeouts = {"timeout": dict.fromkeys(("connect", "read", "write", "pool"),
                                                   timeout)}

    def request(self, method: str, url: str, headers: Mapping[str, str],
                max_bytes: int) -> Answer:
        """One request; its body read while it streams, at most ``max_bytes`` of it (TooLarge
        beyond). Raises httpx's transport errors (httpx.TimeoutException, ...)."""
        target = httpcore.URL(url)
        host = target.host.decode("ascii")
        raw = [(b"Host", host.encode("ascii") if target.port is None
                else f"{host}:{target.port}".encode("ascii")),
               (b"User-Agent", _AGENT), (b"Accept-Encoding", b"identity")]
        raw.extend((k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items())
        try:
            response = self._pool.handle_request(httpcore.Request(
                method, target, headers=raw, extensions=self._timeouts))
            try:
                fields: dict[str, str] = {}
                for k, v in response.headers:
                    name, value = k.decode("latin-1").lower(), v.decode("latin-1")
                    fields[name] = f"{fields[name]}, {value}" if name in fields else value
                body = _capped(method, host, fields, response.stream, max_bytes)
            finally:
                response.close()
        except httpcore.TimeoutException as exc:
            raise httpx.TimeoutException(str(exc) or "timed out") from exc
        except httpcore.UnsupportedProtocol as exc:
            raise httpx.UnsupportedProtocol(str(exc)) from exc
        except httpcore.ConnectError as exc:
            raise httpx.ConnectError(str(exc)) from exc
        except httpcore.ReadError as exc:
            raise httpx.ReadError(str(exc)) from exc
        except httpcore.WriteError as exc:
            raise httpx.WriteError(str(exc)) from exc
        except httpcore.RemoteProtocolError as exc:
            raise httpx.RemoteProtocolError(str(exc)) from exc
        except (httpcore.ProtocolError, httpcore.NetworkError) as exc:
            raise httpx.TransportError(str(exc)) from exc
        return Answer(response.status, fields, body)

    def close(self) -> None:
        self._pool.close()


_AGENT = USER_AGENT.encode("ascii")


def _capped(method: str, host: str, headers: Mapping[str, str], stream: Iterable[bytes],
            max_bytes: int) -> bytes:
    """``read_capped`` for a body read straight from httpcore."""
    if method == "HEAD":
        for _ in stream:  # empty, read to its end: the connection is then kept
            pass
        return b""
    encoding = headers.get("content-encoding", "identity").strip().lower()
    if encoding != "identity":  # compressed although we asked for it plain: never inflated
        raise TooLarge(f"{host}: a {encoding}-encoded answer, refused")
    declared = headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > max_bytes:
        raise TooLarge(f"{method} {host}: body over {max_bytes} bytes")
    chunks, size = [], 0
    for chunk in stream:
        size += len(chunk)
        if size > max_bytes:
            raise TooLarge(f"{method} {host}: body over {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def client(timeout: float, verify: bool = True, connections: int = 16,
           headers: dict[str, str] | None = None) -> httpx.Client:
    """An httpx client whose requests obey ``deadline()``; no redirects, no proxies from the
    environment (traffic goes where the configuration says, nowhere else). Up to
    ``connections`` idle connections per origin are kept for reuse."""
    transport = httpx.HTTPTransport()
    # httpx has no parameter for another pool or socket backend; the deadline and
    # round-trip tests fail loudly if a new httpx stops honouring this.
    transport._pool = _Pool(httpx.create_ssl_context(verify=verify), connections)
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


def read_capped(response: httpx.Response, max_bytes: int) -> bytes | None:
    """The body of a streamed response, or None as soon as it exceeds ``max_bytes`` (the
    rest is never read, so a huge answer costs at most ``max_bytes`` of memory). A
    compressed body raises TooLarge: inflating it is what a cap cannot bound."""
    if response.request.method == "HEAD":
        # Its Content-Length is that of the body a GET would get. The empty body is still
        # read to its end: a response closed before that closes its connection too.
        for _ in response.iter_raw():
            pass
        return b""
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding != "identity":  # compressed although we asked for it plain: never inflated
        raise TooLarge(f"{response.request.url.host}: a {encoding}-encoded answer, refused")
    declared = response.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > max_bytes:
        return None
    chunks, size = [], 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > max_bytes:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def fetch(http: httpx.Client, method: str, url: str, max_bytes: int,
          **kwargs: typing.Any) -> httpx.Response:
    """One request whose body is read while it streams, at most ``max_bytes`` of it (raising
    TooLarge beyond: the rest is never read), as a complete response."""
    with http.stream(method, url, **kwargs) as response:
        body = read_capped(response, max_bytes)
        if body is None:
            raise TooLarge(f"{method} {response.request.url.host}: body over {max_bytes} bytes")
    return httpx.Response(response.status_code, headers=response.headers, content=body,
                          request=response.request)
