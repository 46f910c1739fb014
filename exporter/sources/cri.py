"""The CRI source: a Kubernetes node's images, its pods' containers and its image filesystems,
read through the Container Runtime Interface (runtime.v1) the way the kubelet reads them.

It publishes the same snapshots as the Docker source, so drift, versions, signatures, the
status page and every collector serve a containerd node unchanged. What differs:

- A container's tag: the kubelet creates containers from the image ID it pulled, so
  ``Container.image`` is an ID. The reference the pod asked for is ``user_specified_image``
  (runtimes that keep it), else the runtime's own record of it: containerd puts it in the
  OCI spec's ``io.kubernetes.cri.image-name`` annotation, read once per container.
- Image IDs are config digests, as on Docker's classic store; every image came from a pull
  (CRI cannot build), so every RepoDigest is a registry's.
- LastTagTime does not exist: first sight under a tag stands in, exact when the event
  stream saw the pull (decisions/tagged.py), as on Podman.
- Disk is the kubelet's view: ImageFsInfo, and what its image GC could delete.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import grpc
from cri_api.v1 import api_pb2 as cri
from cri_api.v1 import api_pb2_grpc as cri_grpc

from exporter import reference
from exporter.decisions import tagged
from exporter.decisions.stale import container_stale
from exporter.snapshots import Container, DiskSnapshot, EngineSnapshot, Image, ImageFilesystem
from exporter.sources.inventory import VERSION_LABEL, Familiar
from exporter.sources.loop import SourceError
from exporter.state import StateStore
from exporter.timestamps import parse_timestamp

log = logging.getLogger(__name__)

# The kubelet's labels on every container (pkg/kubelet/types/labels.go).
POD_NAMESPACE = "io.kubernetes.pod.namespace"
POD_NAME = "io.kubernetes.pod.name"
# containerd's annotation of the reference a container was created from (pkg/cri/annotations).
IMAGE_NAME = "io.kubernetes.cri.image-name"
MAX_MESSAGE = 64 << 20  # a ListImages answer of a node with 20,000 images is about 6 MB
_STATES = {cri.CONTAINER_CREATED: "created", cri.CONTAINER_RUNNING: "running",
           cri.CONTAINER_EXITED: "exited", cri.CONTAINER_UNKNOWN: "unknown"}


class CriError(SourceError):
    """A CRI call failed; ``code`` is gRPC's status name (NOT_FOUND, DEADLINE_EXCEEDED...)."""

    def __init__(self, message: str, cause: str, code: str) -> None:
        super().__init__(message, cause)
        self.code = code


class Cri:
    """One channel to a CRI socket; every call has the deadline ``timeout``. Errors become
    SourceErrors whose cause names the endpoint, so one dead socket warns once."""

    def __init__(self, endpoint: str, timeout: float) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self._lock = threading.Lock()
        self._channel: grpc.Channel | None = None

    def _stubs(self) -> tuple[cri_grpc.RuntimeServiceStub, cri_grpc.ImageServiceStub]:
        with self._lock:
            if self._channel is None:
                self._channel = grpc.insecure_channel(self.endpoint, options=[
                    ("grpc.max_receive_message_length", MAX_MESSAGE),
                    ("grpc.enable_retries", 0)])
            return (cri_grpc.RuntimeServiceStub(self._channel),
                    cri_grpc.ImageServiceStub(self._channel))

    def call(self, service: str, method: str, request: Any) -> Any:
        runtime, images = self._stubs()
        stub = runtime if service == "runtime" else images
        try:
            return getattr(stub, method)(request, timeout=self.timeout)
        except grpc.RpcError as exc:
            code = exc.code().name if hasattr(exc, "code") else "UNKNOWN"
            details = exc.details() if hasattr(exc, "details") else str(exc)
            cause = f"{self.endpoint}: {code}: {details}"
            raise CriError(f"{self.endpoint}: {method}: {code}: {details}", cause,
                           code) from None

    def version(self) -> cri.VersionResponse:
        return self.call("runtime", "Version", cri.VersionRequest())

    def images(self) -> list[cri.Image]:
        return list(self.call("image", "ListImages", cri.ListImagesRequest()).images)

    def containers(self) -> list[cri.Container]:
        return list(self.call("runtime", "ListContainers", cri.ListContainersRequest())
                    .containers)

    def image_created(self, image_id: str) -> float | None:
        """The image's build time, from its config (ImageStatus with verbose info)."""
        answer = self.call("image", "ImageStatus", cri.ImageStatusRequest(
            image=cri.ImageSpec(image=image_id), verbose=True))
        try:
            spec = json.loads(answer.info.get("info", "{}")).get("imageSpec") or {}
        except (ValueError, AttributeError):
            return None
        return parse_timestamp(spec.get("created")) if isinstance(spec, dict) else None

    def container_image_name(self, container_id: str) -> str:
        """The reference containerd says the container was created from ("" if none)."""
        answer = self.call("runtime", "ContainerStatus", cri.ContainerStatusRequest(
            container_id=container_id, verbose=True))
        try:
            info = json.loads(answer.info.get("info", "{}"))
            name = info["runtimeSpec"]["annotations"].get(IMAGE_NAME, "")
        except (ValueError, KeyError, TypeError, AttributeError):
            return ""
        return name if isinstance(name, str) else ""

    def image_fs(self) -> list[cri.FilesystemUsage]:
        return list(self.call("image", "ImageFsInfo", cri.ImageFsInfoRequest())
                    .image_filesystems)

    def close(self) -> None:
        with self._lock:
            if self._channel is not None:
                self._channel.close()
                self._channel = None


def _labels(c: cri.Container) -> Mapping[str, str]:
    """A container's labels, its annotations under them (a pod's docker-hygiene.* settings
    may come either way)."""
    return {**dict(c.annotations), **dict(c.labels)}


def _newest_attempts(containers: list[cri.Container]) -> list[cri.Container]:
    """One container per pod and name: the kubelet keeps a dead attempt beside its
    replacement, and two series with the same labels are not allowed."""
    newest: dict[tuple[str, str, str], cri.Container] = {}
    for c in containers:
        key = (c.labels.get(POD_NAMESPACE, ""), c.labels.get(POD_NAME, ""), c.metadata.name)
        if key[1] == "":
            key = ("", c.pod_sandbox_id, c.metadata.name or c.id)  # not the kubelet's
        seen = newest.get(key)
        if seen is None or (c.metadata.attempt, c.created_at) > (seen.metadata.attempt,
                                                                   seen.created_at):
            newest[key] = c
    return list(newest.values())


def build_cri_snapshot(images: list[cri.Image], containers: list[cri.Container],
                       created: Mapping[str, float | None], references: Mapping[str, str],
                       last_tagged: Mapping[str, float | None],
                       runtime: tuple[str, str, str] = ("containerd", "", "v1"),
                       familiar: Callable[[str], str] = reference.familiar) -> EngineSnapshot:
    """Join CRI's answers into a snapshot. ``created`` maps image ID to build time,
    ``references`` container ID to the reference it was created from; ``runtime`` is
    Version's (name, version, API version)."""
    by_digest = {d: i.id for i in images for d in i.repo_digests}

    def image_id(c: cri.Container) -> str:
        # image_id where the runtime says it (CRI 1.31+); image_ref is the ID on
        # containerd 1.x and a repo@digest on some runtimes
        return c.image_id or by_digest.get(c.image_ref, c.image_ref)

    uses: dict[str, int] = {}  # every container counts, a dead attempt too (so the GC does)
    for c in containers:
        uses[image_id(c)] = uses.get(image_id(c), 0) + 1
    containers = _newest_attempts(containers)
    out_images = []
    for i in images:
        out_images.append(Image(
            id=i.id,
            tags=tuple(sorted({familiar(t) for t in i.repo_tags})),
            repo_digests=tuple(sorted({familiar(d) for d in i.repo_digests if "@" in d})),
            size=max(i.size, 0),
            created=created.get(i.id) or 0.0,
            last_tagged=last_tagged.get(i.id),
            containers=uses.get(i.id, 0),
            pinned=i.pinned))
    by_tag = {tag: i for i in out_images for tag in i.tags}

    out_containers = []
    for c in containers:
        ref = references.get(c.id, "")
        image = familiar(ref) if ref and not reference.is_image_id(ref) else image_id(c)
        labels = _labels(c)
        out_containers.append(Container(
            id=c.id,
            name=c.metadata.name or c.id[:12],
            image=image,
            image_id=image_id(c),
            state=_STATES.get(c.state, "unknown"),
            created=c.created_at / 1e9,
            stale=container_stale(image_id(c), "", by_tag.get(image)),
            drift_opt_out=labels.get("docker-hygiene.drift", "").lower() == "false",
            version_labels=tuple(sorted((k[len(VERSION_LABEL):], v) for k, v in labels.items()
                                        if k.startswith(VERSION_LABEL))),
            namespace=c.labels.get(POD_NAMESPACE, ""),
            pod=c.labels.get(POD_NAME, "")))
    out_images.sort(key=lambda i: i.id)
    out_containers.sort(key=lambda c: (c.namespace, c.pod, c.name))
    name, version, api = runtime
    return EngineSnapshot(tuple(out_images), tuple(out_containers), api, name, version)


class CriReader:
    """Reads a CRI node; asks each image's build time and each container's reference once
    (both are immutable for an ID), and gives the last snapshot itself while nothing changed.

    ``store`` keeps each tag's first sight across restarts, which stands in for
    LastTagTime; ``pull_times`` (containerd's event stream) makes it exact.
    """

    def __init__(self, api: Cri, store: StateStore | None = None,
                 pull_times: Callable[[], Mapping[str, float]] = dict) -> None:
        self.api = api
        self.store = store
        self.pull_times = pull_times
        self._created: dict[str, float | None] = {}
        self._references: dict[str, str] = {}
        self._last_read = 0.0
        self._familiar = Familiar()
        self._last: tuple[Any, EngineSnapshot] | None = None
        self._said = False

    def read(self) -> EngineSnapshot:
        asked = time.time()
        answer = self.api.version()
        runtime = (answer.runtime_name, answer.runtime_version, answer.runtime_api_version)
        if not self._said:
            self._said = True
            log.info("reading a Kubernetes node through CRI (%s %s, API %s): disk figures are "
                     "the image filesystem's, there is no LastTagTime (first sight of each "
                     "tag stands in)", *runtime)
        images = self.api.images()
        answered = time.time()
        containers = self.api.containers()
        pulls = self.pull_times()
        inputs = (sorted(i.SerializeToString(deterministic=True) for i in images),
                  sorted(c.SerializeToString(deterministic=True) for c in containers),
                  pulls, runtime)
        if self._last is not None and self._last[0] == inputs:
            self._last_read = asked
            return self._last[1]

        # One image or container gone since the list costs its own answer for this read;
        # once the runtime times out or is gone, the remaining ones wait for the next read
        # instead of each waiting for the deadline.
        failed, down = False, False

        def ask(what: str, call: Callable[[str], Any], key: str, into: dict[str, Any]) -> None:
            """``into[key] = call(key)``, unless it fails."""
            nonlocal failed, down
            failed = failed or down
            if down:
                return
            try:
                into[key] = call(key)
            except CriError as exc:
                log.debug("cannot read %s of %s: %s", what, key, exc)
                failed, down = True, exc.code != "NOT_FOUND"

        for i in images:
            if i.id not in self._created:
                ask("the build time", self.api.image_created, i.id, self._created)
        created = {i.id: self._created.get(i.id) for i in images}
        self._created = {k: v for k, v in self._created.items() if k in created}

        for c in containers:
            if c.id not in self._references:
                ref = c.image.user_specified_image or (
                    c.image.image if not reference.is_image_id(c.image.image) else "")
                if ref:
                    self._references[c.id] = ref
                else:
                    ask("the image name", self.api.container_image_name, c.id,
                        self._references)
        references = {c.id: self._references[c.id] for c in containers
                      if c.id in self._references}
        self._references = {k: v for k, v in self._references.items() if k in references}

        times: dict[str, float | None] = {}
        if self.store is not None:
            current = {self._familiar(t): i.id for i in images for t in i.repo_tags}
            seen = tagged.tags_seen(self.store.tags_seen(), current, answered,
                                    self._last_read, pulls)
            self.store.keep_tags_seen(seen)
            times.update(tagged.last_tagged(seen))
        self._last_read = asked
        snapshot = build_cri_snapshot(images, containers, created, references, times,
                                      runtime, self._familiar)
        self._familiar.next_read()
        self._last = None if failed else (inputs, snapshot)
        return snapshot


def _capacity(mountpoint: str) -> int | None:
    """The filesystem's size, where this process sees the mountpoint (a pod sees it when
    the runtime's root is mounted in)."""
    try:
        st = os.statvfs(mountpoint)
    except OSError:
        return None
    return st.f_blocks * st.f_frsize


def build_cri_disk(filesystems: list[cri.FilesystemUsage],
                   capacity: Callable[[str], int | None] = _capacity) -> DiskSnapshot:
    """The kubelet's view of disk: ImageFsInfo and each filesystem's capacity. docker
    system df's rows stay None: a node has none of them."""
    found = tuple(sorted((ImageFilesystem(
        f.fs_id.mountpoint, f.used_bytes.value,
        f.inodes_used.value if f.HasField("inodes_used") else None,
        capacity(f.fs_id.mountpoint)) for f in filesystems), key=lambda f: f.mountpoint))
    return DiskSnapshot(None, None, None, None, image_filesystems=found)


class CriDiskReader:
    def __init__(self, api: Cri) -> None:
        self.api = api

    def read(self) -> DiskSnapshot:
        return build_cri_disk(self.api.image_fs())
