"""Docker Engine client: the few read-only Engine API calls the exporter makes.

The client negotiates the API version with the daemon on first use and again after any
failure, so a daemon that is upgraded or restarted under a running exporter is handled.
Only GET requests are ever sent.
"""

from __future__ import annotations

from typing import Any

import docker
import docker.errors
import requests.exceptions
import urllib3.exceptions
from docker.utils import kwargs_from_env

from exporter.sources.loop import SourceError


class EngineError(SourceError):
    """An Engine API call failed; ``reason`` is a short, stable word for logs.

    The message names the host, the operation and the cause
    (``unix:///var/run/docker.sock: GET /images/json: connect: No such file or directory``);
    ``cause`` leaves the operation out, so every source failing for it shares one warning.
    """

    def __init__(self, reason: str, detail: str, host: str = "", operation: str = "") -> None:
        where = f"{host}: " if host else ""
        super().__init__(f"{where}{operation + ': ' if operation else ''}{detail}",
                         f"{where}{detail}")
        self.reason = reason
        self.detail = detail


def _root_cause(exc: BaseException) -> str:
    """The innermost OS error of a failed call ("Connection refused"), else its text."""
    seen: set[int] = set()
    stack: list[object] = [exc]
    while stack:
        item = stack.pop()
        if not isinstance(item, BaseException) or id(item) in seen or len(seen) > 50:
            continue
        seen.add(id(item))
        if isinstance(item, OSError) and item.strerror:
            return item.strerror
        stack.extend([item.__cause__, item.__context__, *item.args])
        stack.extend(getattr(item, attr, None) for attr in ("reason", "original_error"))
    return str(exc)[:300] or type(exc).__name__


def _timed_out(exc: BaseException) -> bool:
    seen = 0
    item: BaseException | None = exc
    while item is not None and seen < 20:
        if isinstance(item, requests.exceptions.Timeout | urllib3.exceptions.TimeoutError |
                      TimeoutError):
            return True
        item, seen = item.__cause__ or item.__context__, seen + 1
    return False


def _classify(exc: Exception, host: str, operation: str, timeout: float) -> EngineError:
    if _timed_out(exc):
        return EngineError("timeout", f"no answer within {timeout:g}s", host, operation)
    if isinstance(exc, docker.errors.APIError):
        return EngineError("api_error", exc.explanation or str(exc), host, operation)
    if isinstance(exc, requests.exceptions.ConnectionError | docker.errors.DockerException):
        return EngineError("unreachable", f"connect: {_root_cause(exc)}", host, operation)
    if isinstance(exc, ValueError):  # a body that is not JSON
        return EngineError("bad_response", f"answer is not JSON: {exc}", host, operation)
    return EngineError("error", f"{type(exc).__name__}: {exc}", host, operation)


_OPERATIONS = {"images": "GET /images/json", "containers": "GET /containers/json",
               "inspect_image": "GET /images/{id}/json",
               "inspect_container": "GET /containers/{id}/json", "info": "GET /info",
               "version": "GET /version", "events": "GET /events", "df": "GET /system/df",
               "ping": "GET /_ping"}


def _drop_tracebacks(exc: BaseException) -> None:
    """requests and urllib3 wrap a failed connect in exceptions whose tracebacks keep the
    connect frame, and with it the unconnected socket, alive until the cycle collector runs:
    one file descriptor per failed attempt while the daemon is down. Without the tracebacks
    the frames, and the sockets, are freed at once."""
    seen: set[int] = set()
    stack: list[object] = [exc]
    while stack:
        item = stack.pop()
        if not isinstance(item, BaseException) or id(item) in seen or len(seen) > 50:
            continue
        seen.add(id(item))
        item.__traceback__ = None
        stack.extend([item.__cause__, item.__context__, *item.args])
        stack.extend(getattr(item, attr, None) for attr in ("reason", "original_error"))


class Engine:
    """One connection to a Docker daemon. Not shared between threads: each source owns one."""

    def __init__(self, host: str, timeout: float) -> None:
        self.host = host
        self.timeout = timeout
        self._api: docker.APIClient | None = None

    @property
    def api_version(self) -> str:
        return self._api.api_version if self._api else ""

    def _client(self) -> docker.APIClient:
        if self._api is None:
            kwargs = kwargs_from_env()
            kwargs["base_url"] = self.host
            # "auto" asks the daemon for its version: the newest both sides speak.
            self._api = docker.APIClient(version="auto", timeout=self.timeout, **kwargs)
        return self._api

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """The SDK's ``method``, or a function of the SDK client given as the first argument
        (for calls the SDK has no parameter for)."""
        try:
            client = self._client()
            if args and callable(args[0]):
                return args[0](client, *args[1:], **kwargs)
            return getattr(client, method)(*args, **kwargs)
        except Exception as exc:
            if not isinstance(exc, docker.errors.NotFound):
                self.close()  # renegotiate on the next call
            error = _classify(exc, self.host, _OPERATIONS.get(method, method), self.timeout)
            _drop_tracebacks(exc)
            raise error from exc

    def images(self) -> list[dict[str, Any]]:
        """GET /images/json: tagged and dangling top-level images."""
        return self._call("images") or []

    def containers(self) -> list[dict[str, Any]]:
        """GET /containers/json?all=1."""
        return self._call("containers", all=True) or []

    def _inspect(self, method: str, object_id: str) -> dict[str, Any] | None:
        """An inspect call, or None when the object went away meanwhile."""
        try:
            return self._call(method, object_id)
        except EngineError as exc:
            if isinstance(exc.__cause__, docker.errors.NotFound):
                return None
            raise

    def inspect_image(self, image_id: str) -> dict[str, Any] | None:
        """GET /images/{id}/json."""
        return self._inspect("inspect_image", image_id)

    def inspect_container(self, container_id: str) -> dict[str, Any] | None:
        """GET /containers/{id}/json."""
        return self._inspect("inspect_container", container_id)

    def info(self) -> dict[str, Any]:
        """GET /info: the daemon's registry configuration (insecure registries)."""
        return self._call("info") or {}

    def version(self) -> dict[str, Any]:
        """GET /version: the daemon's OS and architecture."""
        return self._call("version") or {}

    def events(self, since: str, filters: dict[str, list[str]],
               silence: float | None = None) -> Any:
        """GET /events as a stream of decoded events. Reading the next one raises when none
        came for ``silence`` seconds: a half-open connection looks exactly like a quiet
        engine, so the caller checks with a ping and reconnects."""

        def open_stream(api: docker.APIClient) -> Any:
            params = {"since": since, "filters": docker.utils.convert_filters(filters)}
            response = api._get(api._url("/events"), params=params, stream=True,
                                timeout=(self.timeout, silence))
            api._raise_for_status(response)
            return docker.types.CancellableStream(api._stream_helper(response, decode=True),
                                                  response)

        return self._call("events", open_stream)

    def ping(self) -> bool:
        """GET /_ping: whether the engine answers at all."""
        return bool(self._call("ping"))

    def system_df(self) -> dict[str, Any]:
        """GET /system/df: slow, walks every layer, container and volume."""
        return self._call("df") or {}

    def close(self) -> None:
        if self._api is not None:
            try:
                self._api.close()
            finally:
                self._api = None
