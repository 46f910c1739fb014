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
from docker.utils import kwargs_from_env


class EngineError(Exception):
    """An Engine API call failed; ``reason`` is a short, stable word for logs."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def _classify(exc: Exception) -> EngineError:
    if isinstance(exc, requests.exceptions.Timeout):
        return EngineError("timeout", str(exc))
    if isinstance(exc, docker.errors.APIError):
        return EngineError("api_error", exc.explanation or str(exc))
    if isinstance(exc, requests.exceptions.ConnectionError | docker.errors.DockerException):
        return EngineError("unreachable", str(exc))
    if isinstance(exc, ValueError):  # a body that is not JSON
        return EngineError("bad_response", str(exc))
    return EngineError("error", f"{type(exc).__name__}: {exc}")


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


def is_podman(version: Any) -> bool:
    """Whether a /version answer comes from Podman's Docker-compatible service."""
    components = version.get("Components") if isinstance(version, dict) else None
    return isinstance(components, list) and any(
        isinstance(c, dict) and c.get("Name") == "Podman Engine" for c in components)


def podman_local(name: str) -> bool:
    """Podman names what it builds, imports or commits ``localhost/...``; the RepoDigests it
    gives such images are of manifests it made itself, never served by a registry."""
    return name.startswith("localhost/")


class Engine:
    """One connection to a Docker daemon. Not shared between threads: each source owns one."""

    def __init__(self, host: str, timeout: float) -> None:
        self.host = host
        self.timeout = timeout
        self._api: docker.APIClient | None = None
        self._podman: bool | None = None

    @property
    def api_version(self) -> str:
        return self._api.api_version if self._api else ""

    @property
    def podman(self) -> bool:
        """Whether the engine is Podman; asked once per connection (GET /version)."""
        if self._podman is None:
            self._podman = is_podman(self.version())
        return self._podman

    def _client(self) -> docker.APIClient:
        if self._api is None:
            kwargs = kwargs_from_env()
            kwargs["base_url"] = self.host
            # "auto" asks the daemon for its version: the newest both sides speak.
            self._api = docker.APIClient(version="auto", timeout=self.timeout, **kwargs)
        return self._api

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return getattr(self._client(), method)(*args, **kwargs)
        except Exception as exc:
            if not isinstance(exc, docker.errors.NotFound):
                self.close()  # renegotiate on the next call
            _drop_tracebacks(exc)
            raise _classify(exc) from exc

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

    def events(self, since: str, filters: dict[str, list[str]]) -> Any:
        """GET /events as a stream of decoded events (the read blocks until the next one)."""
        return self._call("events", since=since, filters=filters, decode=True)

    def system_df(self) -> dict[str, Any]:
        """GET /system/df: slow, walks every layer, container and volume."""
        return self._call("df") or {}

    def close(self) -> None:
        self._podman = None
        if self._api is not None:
            try:
                self._api.close()
            finally:
                self._api = None
