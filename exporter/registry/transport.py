"""HTTP clients whose requests end at a wall-clock deadline, whatever the peer does.

httpx's timeouts apply to each read: a server that trickles one byte a second never trips
them, and holds the request as long as it likes. Here every socket operation (connect,
TLS handshake, each read and write) is given at most the time left before the deadline of
the request in progress, so connect, headers and body together end on time. The deadline
is set around a request with ``deadline(seconds)``; it belongs to the calling thread's
context, which is where httpx's synchronous client does its I/O.
"""

from __future__ import annotations

import contextlib
import contextvars
import ssl
import time
import typing
from collections.abc import Iterator

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


def client(timeout: float, verify: bool = True, connections: int = 16,
           headers: dict[str, str] | None = None) -> httpx.Client:
    """An httpx client whose requests obey ``deadline()``; no redirects, no proxies from the
    environment (traffic goes where the configuration says, nowhere else)."""
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


def read_capped(response: httpx.Response, max_bytes: int) -> bytes | None:
    """The body of a streamed response, or None as soon as it exceeds ``max_bytes`` (the
    rest is never read, so a huge answer costs at most ``max_bytes`` of memory). A
    compressed body raises TooLarge: inflating it is what a cap cannot bound."""
    if response.request.method == "HEAD":
        return b""  # its Content-Length is that of the body a GET would get
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
