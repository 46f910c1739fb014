"""Docker Engine client: the few read-only Engine API calls the exporter makes.

The client negotiates the API version with the daemon on first use and again after a failed
call (except the daemon's answer about one object, such as a 404; a 400 renegotiates), so a
daemon that is upgraded or restarted under a running exporter is handled.
Only GET requests are ever sent.

Negotiation: the unversioned ``GET /version`` gives the daemon's range (``MinAPIVersion`` to
``ApiVersion``); the exporter talks the newest version both sides know. The docker SDK's
``version="auto"`` would take the daemon's newest as is, so a newer daemon would answer in
shapes nobody here has read; Docker 29.0-29.2 refuse anything below 1.44, 29.3 goes down to
1.40 again, 20.10 tops out at 1.41: every one of them is spoken to in a version it accepts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import docker
import docker.errors
import requests.exceptions
import urllib3.exceptions
from docker.utils import kwargs_from_env

from exporter.decisions import provenance
from exporter.sources.loop import SourceError

# The newest Engine API whose answers this exporter has been checked against (moby
# api/docs/v1.53.yaml, Docker 29.2), and the oldest the docker SDK speaks.
NEWEST_KNOWN_API = "1.53"
OLDEST_API = "1.24"
_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}



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


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """Every exception a failed call is made of, once each: requests and urllib3 wrap the
    real cause in several layers (causes, contexts, arguments, ``reason``)."""
    seen: set[int] = set()
    stack: list[object] = [exc]
    while stack:
        item = stack.pop()
        if not isinstance(item, BaseException) or id(item) in seen or len(seen) > 50:
            continue
        seen.add(id(item))
        yield item
        stack.extend([item.__cause__, item.__context__, *item.args])
        stack.extend(getattr(item, attr, None) for attr in ("reason", "original_error"))


def _root_cause(exc: BaseException) -> str:
    """The innermost OS error of a failed call ("Connection refused"), else its text."""
    found = next((item.strerror for item in _chain(exc)
                  if isinstance(item, OSError) and item.strerror), None)
    return found or str(exc)[:300] or type(exc).__name__


def _timed_out(exc: BaseException) -> bool:
    """Whether a failed call ran out of time (not: was refused). urllib3's refused connection
    (NewConnectionError) is a subclass of its connect timeout, so it is ruled out first."""
    seen = 0
    item: BaseException | None = exc
    while item is not None and seen < 20:
        if isinstance(item, urllib3.exceptions.NewConnectionError):
            return False
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


def api_key(version: str) -> tuple[int, ...]:
    """ "1.9" < "1.10": API versions compare as numbers, part by part."""
    try:
        return tuple(int(part) for part in version.split("."))
    except ValueError:
        raise EngineError("bad_response", f"{version!r} is not an API version") from None


def negotiate(daemon_newest: str, daemon_oldest: str) -> str:
    """The API version to talk: the daemon's newest, capped at the newest this exporter knows.

    A daemon that accepts nothing this exporter speaks is an error naming both ranges, not a
    string of 400s ("client version 1.41 is too old").
    """
    if not daemon_newest:
        raise EngineError("bad_response", "GET /version gave no ApiVersion")
    version = min(daemon_newest, NEWEST_KNOWN_API, key=api_key)
    if (daemon_oldest and api_key(daemon_oldest) > api_key(version)) or \
            api_key(version) < api_key(OLDEST_API):
        raise EngineError(
            "unsupported_api",
            f"the Docker daemon accepts API {daemon_oldest or '?'} to {daemon_newest}; this "
            f"exporter speaks API {OLDEST_API} to {NEWEST_KNOWN_API}")
    return version


def _drop_tracebacks(exc: BaseException) -> None:
    """requests and urllib3 wrap a failed connect in exceptions whose tracebacks keep the
    connect frame, and with it the unconnected socket, alive until the cycle collector runs:
    one file descriptor per failed attempt while the daemon is down. Without the tracebacks
    the frames, and the sockets, are freed at once."""
    for item in _chain(exc):
        item.__traceback__ = None


def is_podman(version: Any) -> bool:
    """Whether a /version answer comes from Podman's Docker-compatible service."""
    components = version.get("Components") if isinstance(version, dict) else None
    return isinstance(components, list) and any(
        isinstance(c, dict) and c.get("Name") == "Podman Engine" for c in components)


def uses_snapshotter(info: Any) -> bool:
    """Whether a /info answer comes from a daemon on the containerd image store: it reports
    ``["driver-type", "io.containerd.snapshotter.v1"]`` among its DriverStatus."""
    status = info.get("DriverStatus") if isinstance(info, dict) else None
    return isinstance(status, list) and any(
        isinstance(row, list) and len(row) == 2 and row[0] == "driver-type"
        and str(row[1]).startswith("io.containerd.snapshotter") for row in status)


class Engine:
    """One connection to a Docker daemon. Not shared between threads: each source owns one."""

    def __init__(self, host: str, timeout: float) -> None:
        self.host = host
        self.timeout = timeout
        self._api: docker.APIClient | None = None
        self.platform = ""  # the daemon's os/architecture, from GET /version
        self.server_version = ""  # the daemon's Version, from GET /version
        self._podman: bool | None = None
        self._containerd: bool | None = None

    @property
    def api_version(self) -> str:
        return self._api.api_version if self._api else ""

    def supports(self, version: str) -> bool:
        """Whether the negotiated API version is ``version`` or newer."""
        return bool(self.api_version) and api_key(self.api_version) >= api_key(version)

    @property
    def podman(self) -> bool:
        """Whether the engine is Podman; asked once per connection (GET /version)."""
        if self._podman is None:
            self._run(lambda api: None, "GET /version")  # connecting reads /version
        return bool(self._podman)

    @property
    def store(self) -> str:
        """The image store: classic, containerd or podman (decisions.provenance); asked once
        per connection (GET /info: a containerd-store daemon reports the snapshotter)."""
        if self.podman:
            return provenance.PODMAN
        if self._containerd is None:
            self._containerd = uses_snapshotter(self.info())
        return provenance.CONTAINERD if self._containerd else provenance.CLASSIC

    def _client(self) -> docker.APIClient:
        if self._api is None:
            kwargs = kwargs_from_env()
            kwargs["base_url"] = self.host
            api = docker.APIClient(version=NEWEST_KNOWN_API, timeout=self.timeout, **kwargs)
            try:
                found = api.version(api_version=False)  # unversioned: every daemon answers it
                version = negotiate(str(found.get("ApiVersion") or ""),
                                    str(found.get("MinAPIVersion") or ""))
            except BaseException:
                api.close()
                raise
            if version != NEWEST_KNOWN_API:
                api.close()
                api = docker.APIClient(version=version, timeout=self.timeout, **kwargs)
            self._podman = is_podman(found)
            self.server_version = str(found.get("Version") or "")
            arch = str(found.get("Arch") or "")
            self.platform = f"{found.get('Os') or 'linux'}/{_ARCH.get(arch, arch)}" if arch \
                else ""
            self._api = api
        return self._api

    def _run(self, call: Callable[[docker.APIClient], Any], operation: str) -> Any:
        try:
            return call(self._client())
        except EngineError as exc:  # from the version negotiation
            self.close()
            raise EngineError(exc.reason, exc.detail, self.host, "GET /version") from None
        except Exception as exc:
            # Reconnect and renegotiate on the next call, unless the daemon answered about
            # this one object (404, 500): a 400 is what a version it no longer accepts gets.
            if not isinstance(exc, docker.errors.APIError) or exc.status_code == 400:
                self.close()
            error = _classify(exc, self.host, operation, self.timeout)
            _drop_tracebacks(exc)
            raise error from exc

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self._run(lambda api: getattr(api, method)(*args, **kwargs),
                         _OPERATIONS.get(method, method))

    def images(self) -> list[dict[str, Any]]:
        """GET /images/json: tagged and dangling top-level images.

        From API 1.47 with ``manifests=1``: each image's platform manifests (containerd image
        store; a classic store has none and ignores the parameter). The SDK has no parameter
        for it, hence the raw call.
        """
        def call(api: docker.APIClient) -> Any:
            if not self.supports("1.47"):
                return api.images()
            return api._result(api._get(api._url("/images/json"), params={"manifests": "1"}),
                               True)
        return self._run(call, "GET /images/json") or []

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

        return self._run(open_stream, "GET /events")

    def ping(self) -> bool:
        """GET /_ping: whether the engine answers at all."""
        return bool(self._call("ping"))

    def system_df(self) -> dict[str, Any]:
        """GET /system/df: slow, walks every layer, container and volume.

        Sent without ``type=``: every kind is wanted, and naming all four is the same work
        for the daemon. Without ``verbose`` too: on API 1.52 either answer carries item
        lists (``Items`` with verbose, the legacy lists without), and from 1.53 the
        specification's answer without it is the per-kind summaries alone, the cheapest.
        Both shapes are parsed (sources/disk.py).
        """
        return self._call("df") or {}

    def close(self) -> None:
        self._podman = self._containerd = None
        if self._api is not None:
            try:
                self._api.close()
            finally:
                self._api = None
