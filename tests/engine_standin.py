"""A stand-in Docker Engine 25 to 29, containerd image store or classic, on a unix socket.

No such engine runs here (Debian ships dockerd 20.10, API 1.41), so this one answers the
way moby's Engine API specification says those versions answer: api/docs/v1.44.yaml to
v1.53.yaml and api/docs/CHANGELOG.md, with the daemon's version rules from its routers
(daemon/server/router/*, daemon/containerd/*). Each ``EngineVersion`` below names the release
and API range it follows; every answer is shaped for the API version the request asks for,
and each rule that shapes it names the version (or file) it comes from.

Its images are real: ``pull`` reads what a tag names in a real registry (CNCF Distribution),
so image IDs, RepoDigests, Descriptor and Manifests carry the digests the registry serves,
and drift is decided against real documents. What cannot be real is said where it is made
up: the unpacked size of a snapshot (the compressed layer sizes are used), container and
volume sizes.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import queue
import re
import socketserver
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

import httpx

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
ACCEPT = ", ".join((OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST))
DANGLING = "moby-dangling@"  # daemon/containerd/soft_delete.go imageNameDanglingPrefix


@dataclass(frozen=True)
class EngineVersion:
    """A Docker release: its ``ApiVersion`` (newest, and the default for un-prefixed paths)
    and ``MinAPIVersion``, from docker/docs content/reference/api/engine/_index.md."""

    release: str
    api: str
    min_api: str

    @property
    def keeps_dangling(self) -> bool:
        """A re-pull keeps the replaced image as a dangling record from Docker 27.2
        (moby#48380, release notes 27.2.0); before, it vanishes."""
        return _key(self.release) >= (27, 2)


DOCKER_25_0 = EngineVersion("25.0.5", "1.44", "1.24")
DOCKER_27_5 = EngineVersion("27.5.1", "1.47", "1.24")
DOCKER_28_0 = EngineVersion("28.0.4", "1.48", "1.24")
DOCKER_29_0 = EngineVersion("29.0.0", "1.52", "1.44")  # the first to refuse clients below 1.44
DOCKER_29_2 = EngineVersion("29.2.0", "1.53", "1.44")
# 29.3 speaks 1.54 and accepts 1.40 again. Only its range is modelled: asked for 1.53 or
# older (as the exporter does) it answers in the shapes of that version, like dockerd does.
DOCKER_29_3 = EngineVersion("29.3.0", "1.54", "1.40")
# No such release: a daemon whose minimum is above every version the exporter knows.
FUTURE = EngineVersion("31.0.0", "1.60", "1.54")


def _key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))


def _ge(version: str, than: str) -> bool:
    return _key(version) >= _key(than)


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _rfc3339(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime(
        "%Y-%m-%dT%H:%M:%S.%f000Z")


def _qualified(ref: str) -> str:
    """The fully qualified repository of a reference: "busybox:1" -> "docker.io/library/busybox"
    (distribution/reference's normalisation, as the daemon writes Identity)."""
    name = _familiar_name(ref)
    first = name.split("/", 1)[0]
    if "/" in name and ("." in first or ":" in first or first == "localhost"):
        return name
    return "docker.io/" + (name if "/" in name else "library/" + name)


def _familiar_name(ref: str) -> str:
    """The repository of a reference, registry port kept: "h:5000/a/b:tag" -> "h:5000/a/b"."""
    name = ref.partition("@")[0]
    slash, colon = name.rfind("/"), name.rfind(":")
    return name[:colon] if colon > slash else name


@dataclass
class PlatformManifest:
    """One entry of what a tag names: a platform manifest, with what the store holds of it."""

    descriptor: dict[str, Any]  # as the index lists it (with platform), or built for a manifest
    kind: str  # image, attestation or unknown (daemon/containerd/image_list.go)
    available: bool  # config and layers pulled: only the host's platform is pulled
    content: int = 0  # manifest + config + layers, bytes, when available
    unpacked: int = 0  # made up: the compressed layer sizes (nothing is unpacked here)
    config: dict[str, Any] = field(default_factory=dict)
    config_digest: str = ""

    @property
    def digest(self) -> str:
        return self.descriptor["digest"]

    @property
    def platform(self) -> dict[str, str]:
        return dict(self.descriptor.get("platform") or {
            "os": self.config.get("os", ""), "architecture": self.config.get("architecture", "")})


@dataclass
class Target:
    """What one pull fetched: an index (or manifest list) or a single manifest."""

    descriptor: dict[str, Any]  # mediaType, digest, size
    manifests: list[PlatformManifest]

    @property
    def digest(self) -> str:
        return self.descriptor["digest"]

    def host(self) -> PlatformManifest | None:
        return next((m for m in self.manifests if m.kind == "image" and m.available), None)


@dataclass
class Record:
    """An image record of containerd's store: a name pointing at a target."""

    name: str
    target: str
    updated: float
    built: bool = False  # made on the host (docker build/tag), not pulled


@dataclass
class StandinContainer:
    id: str
    name: str
    config_image: str  # the reference it was created from (Config.Image)
    image_id: str  # the target digest of the image it was created from
    manifest: dict[str, Any]  # ImageManifestDescriptor: the platform manifest it runs
    state: str
    created: float
    size_rw: int
    labels: dict[str, str]


class StandinEngine:
    """Answers GET (and HEAD) like dockerd ``version`` with the containerd image store (the
    default from Docker 29 on fresh installs) or, with ``containerd=False``, the classic
    graph-driver store, where an image ID is its config digest."""

    def __init__(self, socket_path: Path, version: EngineVersion, arch: str = "amd64",
                 containerd: bool = True) -> None:
        self.socket_path = socket_path
        self.version = version
        self.arch = arch
        self.containerd = containerd
        self.targets: dict[str, Target] = {}
        self.records: dict[str, Record] = {}  # by name
        # Classic store: images a pull left without their tag, and every RepoDigest an
        # image ID was pulled by (the graph driver keeps them all).
        self.kept: set[str] = set()
        self.pulled_as: dict[str, set[str]] = {}
        self.tagged_at: dict[str, float] = {}  # image ID -> when a pull last named it
        self.containers: list[StandinContainer] = []
        self.volumes: list[tuple[str, int, int]] = []  # (name, size, containers using it)
        self.build_cache: list[tuple[str, int, bool]] = []  # (id, size, in use)
        self.requests: list[tuple[str, str]] = []  # (method, path with query)
        self.fail_inspect: set[str] = set()  # image IDs whose inspect answers 500
        self.events: list[dict[str, Any]] = []
        self._subscribers: list[queue.Queue[dict[str, Any] | None]] = []
        self._lock = threading.RLock()
        self.stopped = threading.Event()
        self.server = _serve(self)

    @property
    def host(self) -> str:
        return f"unix://{self.socket_path}"

    def stop(self) -> None:
        self.stopped.set()
        with self._lock:
            for q in self._subscribers:
                q.put(None)
        self.server.shutdown()
        self.server.server_close()

    # -- what happens on the host --------------------------------------------------------

    def pull(self, ref: str, registry: str) -> str:
        """``docker pull ref`` from ``registry`` (plain HTTP); returns the new image ID.

        As daemon/containerd/image_pull.go does: a name that pointed elsewhere leaves the old
        image as ``moby-dangling@<old>`` (27.2 on) or drops it (before), and a dangling record
        of the new target is removed.
        """
        target = self._fetch(ref, registry)
        now = time.time()
        with self._lock:
            self.targets[target.digest] = target
            new_id = self.image_id(target.digest)
            old = self.records.get(ref)
            if old is not None and self.image_id(old.target) != new_id:
                old_id = self.image_id(old.target)
                named = [r for r in self.records.values() if r.name != ref
                         and not r.name.startswith(DANGLING) and self.image_id(r.target) == old_id]
                if not self.containerd:
                    self.kept.add(old_id)  # untagged, RepoDigests kept
                elif self.version.keeps_dangling and not named:
                    self.records[DANGLING + old.target] = Record(DANGLING + old.target,
                                                                 old.target, now)
            self.records.pop(DANGLING + target.digest, None)
            self.records[ref] = Record(ref, target.digest, now)
            self.pulled_as.setdefault(new_id, set()).add(f"{_familiar_name(ref)}@{target.digest}")
            self.tagged_at[new_id] = now
            self._event(ref, now)
        return new_id

    def build(self, name: str, like: str) -> str:
        """``docker build -t name`` giving the same content as ``like`` (a name already here):
        on the containerd store the new name gets a RepoDigest of its own, although nothing
        came from a registry; no pull event."""
        with self._lock:
            target = self.records[like].target
            self.records[name] = Record(name, target, time.time(), built=True)
            return self.image_id(target)

    def image_id(self, target: str) -> str:
        """containerd store: the target (index or manifest) digest; classic: the config
        digest of this platform's manifest."""
        if self.containerd:
            return target
        host = self.targets[target].host()
        assert host is not None
        return host.config_digest

    def image_ids(self) -> set[str]:
        ids = {self.image_id(r.target) for r in self.records.values()}
        return ids | self.kept

    def _target_of(self, image_id: str) -> Target:
        if self.containerd:
            return self.targets[image_id]
        return next(t for t in self.targets.values() if t.host() and
                    t.host().config_digest == image_id)  # type: ignore[union-attr]

    def run(self, name: str, ref: str, state: str = "running",
            labels: dict[str, str] | None = None) -> str:
        """``docker run -d --name name ref`` (or create, with ``state="created"``)."""
        with self._lock:
            target = self.targets[self.records[ref].target]
            host = target.host()
            assert host is not None, f"{ref} has nothing for {self.arch}"
            descriptor = {k: v for k, v in host.descriptor.items() if k != "annotations"}
            descriptor.setdefault("platform", host.platform)
            cid = hashlib.sha256(f"{name}{time.time_ns()}".encode()).hexdigest()
            self.containers.append(StandinContainer(
                cid, name, ref, self.image_id(target.digest), descriptor, state, time.time(),
                4096 * (len(self.containers) + 1), labels or {}))
            return cid

    def _fetch(self, ref: str, registry: str) -> Target:
        repo, _, tag = ref.removeprefix(registry + "/").rpartition(":")
        base = f"http://{registry}/v2/{repo}"
        with httpx.Client(timeout=30) as client:
            r = client.get(f"{base}/manifests/{tag}", headers={"Accept": ACCEPT})
            r.raise_for_status()
            media_type = r.headers["Content-Type"].split(";")[0]
            top = {"mediaType": media_type, "digest": _digest(r.content), "size": len(r.content)}
            doc = json.loads(r.content)
            if media_type in (OCI_INDEX, DOCKER_LIST):
                entries = [dict(e) for e in doc.get("manifests", [])]
            else:
                entries = [top]
            manifests = []
            for entry in entries:
                annotations = entry.get("annotations") or {}
                kind = "attestation" if annotations.get(
                    "vnd.docker.reference.type") == "attestation-manifest" else "image"
                plat = entry.get("platform")
                ours = kind == "image" and (plat is None or (
                    plat.get("os") == "linux" and plat.get("architecture") == self.arch))
                pm = PlatformManifest(entry, kind, False)
                if ours:
                    body = r.content if entry is top else client.get(
                        f"{base}/manifests/{entry['digest']}", headers={"Accept": ACCEPT}).content
                    manifest = json.loads(body)
                    config = client.get(f"{base}/blobs/{manifest['config']['digest']}")
                    config.raise_for_status()
                    layers = sum(layer["size"] for layer in manifest.get("layers", []))
                    pm.available = True
                    pm.config = config.json()
                    pm.config_digest = manifest["config"]["digest"]
                    pm.content = len(body) + len(config.content) + layers
                    pm.unpacked = layers
                manifests.append(pm)
        return Target(top, manifests)

    def _event(self, ref: str, now: float) -> None:
        event = {"Type": "image", "Action": "pull",
                 "Actor": {"ID": ref, "Attributes": {"name": _familiar_name(ref)}},
                 "scope": "local", "time": int(now), "timeNano": int(now * 1e9)}
        self.events.append(event)
        for q in self._subscribers:
            q.put(event)

    # -- answers ---------------------------------------------------------------------------

    def _names(self, image_id: str) -> list[Record]:
        return sorted((r for r in self.records.values() if not r.name.startswith(DANGLING)
                       and self.image_id(r.target) == image_id), key=lambda r: r.name)

    def _repo_digests(self, image_id: str, names: list[Record]) -> list[str]:
        if not self.containerd:
            return sorted(self.pulled_as.get(image_id, ()))
        return [f"{_familiar_name(names[0].name)}@{image_id}"] if names else []

    def _users(self, target: str) -> list[StandinContainer]:
        return [c for c in self.containers if c.image_id == target]

    def _created(self, target: Target) -> int:
        host = target.host()
        text = host.config.get("created") if host else None
        if not text:
            return 0
        return int(datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp())

    def _image_size(self, target: Target) -> int:
        # containerd: every platform's present content plus its snapshot, and the index;
        # classic: the one platform's layers.
        if not self.containerd:
            host = target.host()
            return host.unpacked if host else 0
        return sum(m.content + m.unpacked for m in target.manifests if m.available) + \
            target.descriptor["size"]

    def image_summaries(self, api: str, manifests: bool, for_df: bool = False
                        ) -> list[dict[str, Any]]:
        """GET /images/json: one entry per target (daemon/containerd/image_list.go)."""
        out = []
        for digest in self.image_ids():
            target = self._target_of(digest)
            names = self._names(digest)
            tags = [r.name for r in names]
            repo_digests = self._repo_digests(digest, names)
            if not _ge(api, "1.43"):  # changelog v1.43: no more <none> placeholders
                tags = tags or ["<none>:<none>"]
                repo_digests = repo_digests or ["<none>@<none>"]
            host = target.host()
            users = self._users(digest)
            summary: dict[str, Any] = {
                "Id": digest, "ParentId": "", "RepoTags": tags, "RepoDigests": repo_digests,
                "Created": self._created(target), "Size": self._image_size(target),
                "SharedSize": -1,
                "Labels": (host.config.get("config") or {}).get("Labels") or {} if host else {},
                # A real count from 1.51 on, -1 before (changelog v1.51); df counts always.
                "Containers": len(users) if for_df or _ge(api, "1.51") else -1,
            }
            if not _ge(api, "1.44"):  # changelog v1.44: VirtualSize omitted
                summary["VirtualSize"] = summary["Size"]
            # Descriptor (changelog v1.48) and Manifests (v1.47): multi-platform stores only.
            if self.containerd and _ge(api, "1.48") and not for_df:
                summary["Descriptor"] = dict(target.descriptor)
            if self.containerd and manifests and _ge(api, "1.47") and not for_df:
                summary["Manifests"] = [self._manifest_summary(m) for m in target.manifests]
            out.append(summary)
        out.sort(key=lambda s: (-s["Created"], s["Id"]))
        return out

    def _manifest_summary(self, m: PlatformManifest) -> dict[str, Any]:
        """ImageManifestSummary (spec v1.53; the released Go type's keys)."""
        out: dict[str, Any] = {
            "ID": m.digest, "Descriptor": dict(m.descriptor), "Available": m.available,
            "Size": {"Total": m.content + m.unpacked, "Content": m.content}, "Kind": m.kind}
        if m.kind == "image":
            out["ImageData"] = {
                "Platform": m.platform,
                "Containers": [c.id for c in self.containers if c.manifest["digest"] == m.digest],
                "Size": {"Unpacked": m.unpacked}}
        elif m.kind == "attestation":
            out["AttestationData"] = {
                "For": (m.descriptor.get("annotations") or {}).get("vnd.docker.reference.digest")}
        return out

    def image_inspect(self, api: str, name: str) -> dict[str, Any] | None:
        """GET /images/{name}/json (daemon/containerd/image_inspect.go, image_routes.go)."""
        record = self.records.get(name)
        digest = self.image_id(record.target) if record else \
            name if name in self.image_ids() else None
        if digest is None:
            return None
        target = self._target_of(digest)
        names = self._names(digest)
        host = target.host()
        config = host.config if host else {}
        tagged = [r.updated for r in self.records.values() if self.image_id(r.target) == digest]
        doc: dict[str, Any] = {
            "Id": digest,
            "RepoTags": [r.name for r in names],
            "RepoDigests": [f"{_familiar_name(r.name)}@{digest}" for r in names]
            if self.containerd else self._repo_digests(digest, names),
            "Config": {k: v for k, v in (config.get("config") or {}).items() if v},
            "Architecture": config.get("architecture", ""), "Os": config.get("os", ""),
            "Size": host.content if host else 0,
            "RootFS": config.get("rootfs") or {"Type": "layers"},
            "Metadata": {"LastTagTime": _rfc3339(max(tagged, default=self.tagged_at[digest]))},
        }
        if config.get("created"):
            doc["Created"] = config["created"]  # omitted when unknown from 1.44
        if self.containerd and _ge(api, "1.48"):
            doc["Descriptor"] = dict(target.descriptor)
        if self.containerd and _ge(api, "1.53"):
            # ImageInspect.Identity (api/docs/v1.53.yaml; changelog v1.53): where the image
            # came from: Pull [{Repository}] for each repository it was pulled from, Build
            # [{Ref, CreatedAt}] for what was built here.
            identity: dict[str, Any] = {}
            pulled = sorted({_qualified(r.name) for r in names if not r.built})
            built = [r for r in names if r.built]
            if pulled:
                identity["Pull"] = [{"Repository": repo} for repo in pulled]
            if built:
                identity["Build"] = [{"Ref": r.name, "CreatedAt": _rfc3339(r.updated)}
                                     for r in built]
            if identity:
                doc["Identity"] = identity
        if not _ge(api, "1.52"):  # always present before 1.52, omitted when empty after
            doc.update({"Parent": "", "Comment": "", "DockerVersion": "", "Author": "",
                        "GraphDriver": {"Name": "overlayfs", "Data": None}})
        if not self.containerd:
            doc["GraphDriver"] = {"Name": "overlay2", "Data": {}}
        if not _ge(api, "1.45"):  # changelog v1.45
            doc.update({"Container": "", "ContainerConfig": {}})
        if not _ge(api, "1.44"):
            doc["VirtualSize"] = doc["Size"]
        return doc

    def _listed_image(self, c: StandinContainer) -> str:
        """daemon/list.go refreshImage: the reference while it names the container's image
        ID, else that ID."""
        record = self.records.get(c.config_image)
        return c.config_image if record and self.image_id(record.target) == c.image_id \
            else c.image_id

    def container_summaries(self, api: str, all_: bool = True, for_df: bool = False
                            ) -> list[dict[str, Any]]:
        out = []
        for c in self.containers:
            if not all_ and c.state != "running":
                continue
            summary: dict[str, Any] = {
                "Id": c.id, "Names": [f"/{c.name}"], "Image": self._listed_image(c),
                "ImageID": c.image_id, "Command": "/bin/busybox sleep 3600",
                "Created": int(c.created), "Ports": [], "Labels": c.labels, "State": c.state,
                "Status": "Up 2 minutes" if c.state == "running" else "Created",
                "HostConfig": {"NetworkMode": "none"}, "NetworkSettings": {"Networks": {}},
                "Mounts": []}
            # Changelog v1.48, multi-platform stores only; never in /system/df.
            if self.containerd and _ge(api, "1.48") and not for_df:
                summary["ImageManifestDescriptor"] = dict(c.manifest)
            if _ge(api, "1.52"):  # spec v1.53: Health "Added in v1.52"
                summary["Health"] = {"Status": "none", "FailingStreak": 0}
            if for_df:
                summary["SizeRw"] = c.size_rw
                summary["SizeRootFs"] = c.size_rw
            out.append(summary)
        return out

    def container_inspect(self, api: str, cid: str) -> dict[str, Any] | None:
        c = next((c for c in self.containers if cid in (c.id, c.name)), None)
        if c is None:
            return None
        doc: dict[str, Any] = {
            "Id": c.id, "Created": _rfc3339(c.created), "Path": "/bin/busybox",
            "Args": ["sleep", "3600"],
            "State": {"Status": c.state, "Running": c.state == "running", "Paused": False,
                      "Restarting": False, "OOMKilled": False, "Dead": False, "Pid": 0,
                      "ExitCode": 0, "Error": ""},
            "Image": c.image_id, "Name": f"/{c.name}", "RestartCount": 0,
            "Driver": "overlayfs" if self.containerd else "overlay2", "Platform": "linux",
            "Config": {"Image": c.config_image, "Labels": c.labels,
                       "Cmd": ["/bin/busybox", "sleep", "3600"]},
            "HostConfig": {"NetworkMode": "none"}, "Mounts": [],
            "NetworkSettings": {"Networks": {}},
        }
        if self.containerd:
            # A snapshotter, not a graph driver (daemon inspect.go UsesSnapshotter).
            doc["Storage"] = {"RootFS": {"Snapshot": {"Name": "overlayfs"}}}
            if _ge(api, "1.48"):
                doc["ImageManifestDescriptor"] = dict(c.manifest)
        else:
            doc["GraphDriver"] = {"Name": "overlay2", "Data": {}}
        return doc

    def usage(self) -> dict[str, dict[str, int]]:
        """The per-kind summaries of /system/df from API 1.52 (api/types/system/disk_usage.go
        and client/system_disk_usage.go say how they are counted)."""
        images = [(self._target_of(i), self._users(i)) for i in self.image_ids()]
        image_size = sum(self._image_size(t) for t, _ in images)
        running = [c for c in self.containers if c.state in ("running", "paused", "restarting")]
        return {
            "ImageUsage": {"TotalCount": len(images),
                           "ActiveCount": sum(1 for _, u in images if u),
                           "TotalSize": image_size,
                           "Reclaimable": sum(self._image_size(t) for t, u in images if not u)},
            "ContainerUsage": {"TotalCount": len(self.containers), "ActiveCount": len(running),
                               "TotalSize": sum(c.size_rw for c in self.containers),
                               "Reclaimable": sum(c.size_rw for c in self.containers
                                                  if c not in running)},
            "VolumeUsage": {"TotalCount": len(self.volumes),
                            "ActiveCount": sum(1 for v in self.volumes if v[2]),
                            "TotalSize": sum(v[1] for v in self.volumes),
                            "Reclaimable": sum(v[1] for v in self.volumes if not v[2])},
            "BuildCacheUsage": {"TotalCount": len(self.build_cache),
                                "ActiveCount": sum(1 for b in self.build_cache if b[2]),
                                "TotalSize": sum(b[1] for b in self.build_cache),
                                "Reclaimable": sum(b[1] for b in self.build_cache if not b[2])},
        }

    def system_df(self, api: str, query: dict[str, list[str]]) -> dict[str, Any]:
        """GET /system/df (daemon/server/router/system/system_routes.go): the legacy lists up
        to 1.51; 1.52 adds the per-kind summaries and keeps the lists unless ``verbose``; 1.53
        gives the summaries alone (changelog v1.52, spec v1.53). ``type`` (1.42) narrows it.
        Counts of 0 are left out: the generated types use omitempty."""
        kinds = set(query.get("type") or ["container", "image", "volume", "build-cache"])
        verbose = query.get("verbose", ["0"])[0] in ("1", "true")
        legacy_wanted = not _ge(api, "1.52") or (api == "1.52" and not verbose)
        out: dict[str, Any] = {}
        if legacy_wanted:
            if "image" in kinds:
                out["LayersSize"] = self.usage()["ImageUsage"]["TotalSize"]
                out["Images"] = self.image_summaries(api, False, for_df=True)
            if "container" in kinds:
                out["Containers"] = self.container_summaries(api, True, for_df=True)
            if "volume" in kinds:
                out["Volumes"] = [{
                    "Name": n, "Driver": "local", "Mountpoint": f"/var/lib/docker/volumes/{n}",
                    "Labels": {}, "Scope": "local", "Options": {}, "CreatedAt": _rfc3339(0),
                    "UsageData": {"Size": s, "RefCount": r}} for n, s, r in self.volumes]
            if "build-cache" in kinds:
                out["BuildCache"] = [{
                    "ID": i, "Type": "regular", "Description": "", "InUse": u,
                    "Shared": False, "Size": s, "CreatedAt": _rfc3339(0),
                    "LastUsedAt": _rfc3339(0), "UsageCount": 1} for i, s, u in self.build_cache]
        if _ge(api, "1.52"):
            names = {"image": "ImageUsage", "container": "ContainerUsage",
                     "volume": "VolumeUsage", "build-cache": "BuildCacheUsage"}
            usage = self.usage()
            for kind, key in names.items():
                if kind in kinds:
                    out[key] = {k: v for k, v in usage[key].items() if v}
                    if verbose:
                        out[key]["Items"] = []
        return out

    def system_version(self) -> dict[str, Any]:
        """GET /version (spec v1.53 SystemVersion; daemon/info.go SystemVersion)."""
        v = self.version
        details = {"ApiVersion": v.api, "Arch": self.arch, "BuildTime": "2026-01-01T00:00:00Z",
                   "Experimental": "false", "GitCommit": "0000000", "GoVersion": "go1.25.4",
                   "KernelVersion": "6.1.0", "MinAPIVersion": v.min_api, "Os": "linux"}
        return {"Platform": {"Name": "Docker Engine - Community"},
                "Components": [{"Name": "Engine", "Version": v.release, "Details": details},
                               {"Name": "containerd", "Version": "v2.1.5",
                                "Details": {"GitCommit": "0000000"}}],
                "Version": v.release, "ApiVersion": v.api, "MinAPIVersion": v.min_api,
                "GitCommit": "0000000", "GoVersion": "go1.25.4", "Os": "linux",
                "Arch": self.arch, "KernelVersion": "6.1.0",
                "BuildTime": "2026-01-01T00:00:00Z"}

    def system_info(self) -> dict[str, Any]:
        """GET /info: what the exporter reads (RegistryConfig), and how a containerd-store
        daemon shows itself (DriverStatus driver-type io.containerd.snapshotter.v1)."""
        with self._lock:
            return {
                "ID": "standin", "Containers": len(self.containers),
                "ContainersRunning": sum(c.state == "running" for c in self.containers),
                "Images": len(self.image_ids()),
                "Driver": "overlayfs" if self.containerd else "overlay2",
                "DriverStatus": [["driver-type", "io.containerd.snapshotter.v1"]]
                if self.containerd else [["Backing Filesystem", "extfs"]],
                "OperatingSystem": "Stand-in", "OSType": "linux", "Architecture": "x86_64",
                "ServerVersion": self.version.release, "Name": "standin",
                "RegistryConfig": {"InsecureRegistryCIDRs": ["::1/128", "127.0.0.0/8"],
                                   "IndexConfigs": {"docker.io": {
                                       "Name": "docker.io", "Mirrors": [], "Secure": True,
                                       "Official": True}},
                                   "Mirrors": []}}

    def event_stream(self, api: str, since: float) -> Iterator[dict[str, Any]]:
        """GET /events: past events from ``since``, then live ones. Below 1.52 the legacy
        status/id/from fields are added back (changelog v1.52; backFillLegacy)."""
        q: queue.Queue[dict[str, Any] | None] = queue.Queue()
        with self._lock:
            backlog = [e for e in self.events if e["timeNano"] >= since * 1e9]
            self._subscribers.append(q)
        try:
            for event in backlog:
                yield self._shape_event(api, event)
            while not self.stopped.is_set():
                try:
                    event = q.get(timeout=0.5)
                except queue.Empty:
                    continue
                if event is None:
                    return
                yield self._shape_event(api, event)
        finally:
            with self._lock:
                self._subscribers.remove(q)

    @staticmethod
    def _shape_event(api: str, event: dict[str, Any]) -> dict[str, Any]:
        if _ge(api, "1.52"):
            return event
        return {"status": event["Action"], "id": event["Actor"]["ID"], **event}


def _serve(engine: StandinEngine) -> socketserver.BaseServer:
    version_prefix = re.compile(r"/v([0-9.]+)(/.*)")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def address_string(self) -> str:
            return "unix"

        def headers_out(self) -> dict[str, str]:
            # Set before the version check, so errors carry them too (middleware/version.go).
            return {"Api-Version": engine.version.api, "Ostype": "linux",
                    "Server": f"Docker/{engine.version.release} (linux)",
                    "Docker-Experimental": "false"}

        def reply(self, code: int, doc: Any, content_type: str = "application/json") -> None:
            body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
            self.send_response(code)
            for k, v in self.headers_out().items():
                self.send_header(k, v)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def error(self, code: int, message: str, api: str) -> None:
            # JSON errors from API 1.24 on (server.go makeErrorHandler), plain text before.
            if _ge(api, "1.24"):
                self.reply(code, {"message": message})
            else:
                self.reply(code, (message + "\n").encode(), "text/plain; charset=utf-8")

        def do_GET(self) -> None:
            with engine._lock:
                engine.requests.append((self.command, self.path))
            url = urlparse(self.path)
            path = unquote(url.path)
            query = parse_qs(url.query)
            m = version_prefix.fullmatch(path)
            api = engine.version.api
            if m:
                api, path = m.group(1), m.group(2)
                low, high = engine.version.min_api, engine.version.api
                if _key(api) < _key(low):
                    return self.error(400, f"client version {api} is too old. Minimum "
                                      f"supported API version is {low}, please upgrade your "
                                      "client to a newer version", api)
                if _key(api) > _key(high):
                    return self.error(400, f"client version {api} is too new. Maximum "
                                      f"supported API version is {high}", api)
            self.route(api, path, query)

        def do_OTHER(self) -> None:
            with engine._lock:
                engine.requests.append((self.command, self.path))
            self.error(404, "page not found", engine.version.api)

        do_HEAD = do_GET
        do_POST = do_PUT = do_DELETE = do_OTHER

        def route(self, api: str, path: str, query: dict[str, list[str]]) -> None:
            flag = lambda name: query.get(name, ["0"])[0] in ("1", "true")  # noqa: E731
            with engine._lock:
                if path == "/_ping":
                    return self.reply(200, b"OK", "text/plain; charset=utf-8")
                if path == "/version":
                    return self.reply(200, engine.system_version())
                if path == "/info":
                    return self.reply(200, engine.system_info())
                if path == "/images/json":
                    return self.reply(200, engine.image_summaries(api, flag("manifests")))
                if path == "/containers/json":
                    return self.reply(200, engine.container_summaries(api, flag("all")))
                if path == "/system/df":
                    return self.reply(200, engine.system_df(api, query))
                found = re.fullmatch(r"/images/(.+)/json", path)
                if found:
                    name = found.group(1)
                    if name in engine.fail_inspect:
                        return self.error(500, f"error reading image {name}", api)
                    doc = engine.image_inspect(api, name)
                    return self.reply(200, doc) if doc else self.error(
                        404, f"No such image: {name}", api)
                found = re.fullmatch(r"/containers/([^/]+)/json", path)
                if found:
                    doc = engine.container_inspect(api, found.group(1))
                    return self.reply(200, doc) if doc else self.error(
                        404, f"No such container: {found.group(1)}", api)
            if path == "/events":
                return self.stream_events(api, float(query.get("since", ["0"])[0] or 0))
            self.error(404, "page not found", api)

        def stream_events(self, api: str, since: float) -> None:
            self.send_response(200)
            for k, v in self.headers_out().items():
                self.send_header(k, v)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.flush()
            try:
                for event in engine.event_stream(api, since):
                    data = json.dumps(event).encode() + b"\n"
                    self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                    self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")
            except OSError:
                pass

    class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
        daemon_threads = True

    server = Server(str(engine.socket_path), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
