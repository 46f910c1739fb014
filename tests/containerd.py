"""A real containerd (Debian's 1.6, CRI plugin built in) for the tests, and pods run through CRI
the way the kubelet runs them.

containerd gets a private root, state and socket; the suite's Distribution registry serves it
over plain HTTP through ``certs.d/<address>/hosts.toml``. Images are pushed to that registry
straight over its API (a busybox-static layer and a config of our own), so no Docker is
involved. Pods use the node's network namespace (no CNI needed) and the kubelet's labels.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from cri_api.v1 import api_pb2 as cri
from cri_api.v1 import api_pb2_grpc as cri_grpc

from tests.registries import put_blob, put_manifest
from tests.services import _stop, need, wait_for

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"

# The labels the kubelet puts on every sandbox and container (pkg/kubelet/types/labels.go).
POD_NAME = "io.kubernetes.pod.name"
POD_NAMESPACE = "io.kubernetes.pod.namespace"
POD_UID = "io.kubernetes.pod.uid"
CONTAINER_NAME = "io.kubernetes.container.name"


def _busybox_layer() -> tuple[bytes, str]:
    """A gzipped layer with busybox-static as /bin/busybox and /bin/sh, and its diff ID."""
    busybox = "/bin/busybox"
    if not os.path.exists(busybox):
        raise RuntimeError("busybox-static is not installed: run .ci/run")
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tar.gettarinfo(busybox, "bin/busybox")
        info.mtime = 0
        info.uid = info.gid = 0
        with open(busybox, "rb") as f:
            tar.addfile(info, f)
        link = tarfile.TarInfo("bin/sh")
        link.type, link.linkname, link.mode = tarfile.SYMTYPE, "busybox", 0o777
        tar.addfile(link)
    data = raw.getvalue()
    return gzip.compress(data, mtime=0), "sha256:" + hashlib.sha256(data).hexdigest()


HOST_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)


def push_busybox(address: str, repository: str, tag: str, created: str,
                 note: str = "", arch: str = HOST_ARCH) -> str:
    """Push a busybox image whose command sleeps; ``note`` (an env value) makes a distinct
    image with the same layer. Its manifest digest; the config digest is the image ID a CRI
    runtime gives it."""
    layer, diff_id = _busybox_layer()
    config = json.dumps({
        "architecture": arch, "os": "linux", "created": created,
        "config": {"Entrypoint": ["/bin/sh", "-c"], "Cmd": ["sleep 100000"],
                   "Env": [f"NOTE={note}"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": created, "created_by": "tests/containerd.py"}]}).encode()
    doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
           "config": {"mediaType": OCI_CONFIG, "size": len(config),
                      "digest": put_blob(address, repository, config)},
           "layers": [{"mediaType": OCI_LAYER, "size": len(layer),
                       "digest": put_blob(address, repository, layer)}]}
    return put_manifest(address, repository, tag, doc, OCI_MANIFEST)


def config_digest(address: str, repository: str, tag: str) -> str:
    """The config digest of ``tag``'s manifest: the image ID containerd's CRI gives it."""
    import httpx
    r = httpx.get(f"http://{address}/v2/{repository}/manifests/{tag}",
                  headers={"Accept": OCI_MANIFEST})
    r.raise_for_status()
    return str(r.json()["config"]["digest"])


@dataclass
class Pod:
    sandbox: str
    containers: dict[str, str]  # container name -> container ID


@dataclass
class Containerd:
    """containerd with CRI on a private socket; ``registry`` is the address it pulls from."""

    root: Path
    registry: str
    proc: subprocess.Popen | None = None
    channel: grpc.Channel | None = None
    pause: str = ""
    _pods: list[str] = field(default_factory=list)

    @property
    def socket(self) -> Path:
        return self.root / "run" / "containerd.sock"

    @property
    def endpoint(self) -> str:
        return f"unix://{self.socket}"

    def _config(self) -> str:
        text = subprocess.run([need("containerd"), "config", "default"], check=True,
                              capture_output=True, text=True).stdout
        certs = self.root / "certs.d" / self.registry
        certs.mkdir(parents=True, exist_ok=True)
        (certs / "hosts.toml").write_text(
            f'server = "http://{self.registry}"\n\n[host."http://{self.registry}"]\n'
            '  capabilities = ["pull", "resolve", "push"]\n')
        (self.root / "cni").mkdir(exist_ok=True)
        replace = {
            'root = "/var/lib/containerd"': f'root = "{self.root / "lib"}"',
            'state = "/run/containerd"': f'state = "{self.root / "state"}"',
            'address = "/run/containerd/containerd.sock"': f'address = "{self.socket}"',
            'path = "/opt/containerd"': f'path = "{self.root / "opt"}"',
            'sandbox_image = "registry.k8s.io/pause:3.6"': f'sandbox_image = "{self.pause}"',
            'conf_dir = "/etc/cni/net.d"': f'conf_dir = "{self.root / "cni"}"',
            'config_path = ""': f'config_path = "{self.root / "certs.d"}"',
            "restrict_oom_score_adj = false": "restrict_oom_score_adj = true",
            "disable_apparmor = false": "disable_apparmor = true",
            # ImageFsInfo reads 0 until the first collection: once a second, not every 10 s.
            "stats_collect_period = 10": "stats_collect_period = 1",
            'Root = ""': f'Root = "{self.root / "runc"}"',
        }
        for old, new in replace.items():
            if old not in text:
                raise RuntimeError(f"containerd's default config has no {old!r}")
            text = text.replace(old, new)
        return text

    def start(self, timeout: float = 30.0) -> Containerd:
        self.root.mkdir(parents=True, exist_ok=True)
        self.pause = f"{self.registry}/pause:3.9"
        push_busybox(self.registry, "pause", "3.9", "2024-01-01T00:00:00Z", "pause")
        (self.root / "config.toml").write_text(self._config())
        return self.start_daemon(timeout)

    def stop_daemon(self) -> None:
        """Stop containerd alone; its pods' shims go on, as on a node."""
        if self.channel is not None:
            self.channel.close()
            self.channel = None
        if self.proc is not None:
            _stop(self.proc)
            self.proc = None

    def start_daemon(self, timeout: float = 30.0) -> Containerd:
        config = self.root / "config.toml"
        log = open(self.root / "containerd.log", "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen([need("containerd"), "--config", str(config)],
                                     stdout=log, stderr=log, start_new_session=True)
        try:
            wait_for(lambda: self.socket.exists(), timeout, "containerd's socket")
            self.channel = grpc.insecure_channel(self.endpoint)
            wait_for(self._answers, timeout, "containerd's CRI to answer")
        except (TimeoutError, RuntimeError):
            tail = (self.root / "containerd.log").read_text()[-3000:]
            self.stop()
            raise RuntimeError(f"containerd did not start:\n{tail}") from None
        return self

    def _answers(self) -> bool:
        try:
            self.runtime.Version(cri.VersionRequest(), timeout=2)
            return True
        except grpc.RpcError:
            return False

    @property
    def runtime(self) -> cri_grpc.RuntimeServiceStub:
        assert self.channel is not None
        return cri_grpc.RuntimeServiceStub(self.channel)

    @property
    def images(self) -> cri_grpc.ImageServiceStub:
        assert self.channel is not None
        return cri_grpc.ImageServiceStub(self.channel)

    def pull(self, ref: str) -> str:
        """PullImage, as the kubelet calls it; the image ID it answers."""
        return self.images.PullImage(cri.PullImageRequest(image=cri.ImageSpec(image=ref)),
                                     timeout=60).image_ref

    def image_id(self, ref: str) -> str:
        return self.images.ImageStatus(cri.ImageStatusRequest(image=cri.ImageSpec(image=ref)),
                                       timeout=10).image.id

    def run_pod(self, namespace: str, name: str, containers: dict[str, str]) -> Pod:
        """A pod in the node's network namespace, with one container per (name, image ref),
        created the way the kubelet creates them: pulled first, then created from the image
        ID the pull answered, with the reference the pod spec asked for beside it."""
        uid = hashlib.sha256(f"{namespace}/{name}/{time.time_ns()}".encode()).hexdigest()[:32]
        labels = {POD_NAME: name, POD_NAMESPACE: namespace, POD_UID: uid}
        config = cri.PodSandboxConfig(
            metadata=cri.PodSandboxMetadata(name=name, namespace=namespace, uid=uid),
            labels=labels,
            log_directory=str(self.root / "pods" / uid),
            linux=cri.LinuxPodSandboxConfig(security_context=cri.LinuxSandboxSecurityContext(
                namespace_options=cri.NamespaceOption(network=cri.NODE))))
        sandbox = self.runtime.RunPodSandbox(cri.RunPodSandboxRequest(config=config),
                                             timeout=60).pod_sandbox_id
        self._pods.append(sandbox)
        ids = {}
        for cname, ref in containers.items():
            image_ref = self.pull(ref)
            created = self.runtime.CreateContainer(cri.CreateContainerRequest(
                pod_sandbox_id=sandbox, sandbox_config=config,
                config=cri.ContainerConfig(
                    metadata=cri.ContainerMetadata(name=cname),
                    image=cri.ImageSpec(image=image_ref, user_specified_image=ref),
                    labels={**labels, CONTAINER_NAME: cname},
                    log_path=f"{cname}.log")), timeout=60).container_id
            self.runtime.StartContainer(cri.StartContainerRequest(container_id=created),
                                        timeout=60)
            ids[cname] = created
        return Pod(sandbox, ids)

    def remove_pod(self, pod: Pod) -> None:
        self.runtime.StopPodSandbox(cri.StopPodSandboxRequest(pod_sandbox_id=pod.sandbox),
                                    timeout=60)
        self.runtime.RemovePodSandbox(cri.RemovePodSandboxRequest(pod_sandbox_id=pod.sandbox),
                                      timeout=60)
        self._pods.remove(pod.sandbox)

    def image_fs_used(self) -> int:
        return sum(f.used_bytes.value for f in self.images.ImageFsInfo(
            cri.ImageFsInfoRequest(), timeout=10).image_filesystems)

    def kill(self) -> None:
        """SIGKILL the daemon, as a crash would, keeping its root: ``start`` brings it back
        with the same images."""
        if self.channel is not None:
            self.channel.close()
            self.channel = None
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
            self.proc = None

    def stop(self) -> None:
        if self.channel is not None:
            for sandbox in list(self._pods):
                try:
                    self.runtime.StopPodSandbox(
                        cri.StopPodSandboxRequest(pod_sandbox_id=sandbox), timeout=30)
                    self.runtime.RemovePodSandbox(
                        cri.RemovePodSandboxRequest(pod_sandbox_id=sandbox), timeout=30)
                except grpc.RpcError:
                    pass
            self.channel.close()
            self.channel = None
        if self.proc is not None:
            _stop(self.proc)
            self.proc = None
        # Shims outlive containerd; each is in its own session, named after our root.
        subprocess.run(["pkill", "-f", f"containerd-shim.*{self.root}"], check=False)
        subprocess.run(["umount", "-R", "-l", str(self.root / "state")], check=False,
                       capture_output=True)
        for mount in reversed(Path("/proc/mounts").read_text().splitlines()):
            point = mount.split()[1]
            if point.startswith(str(self.root)):
                subprocess.run(["umount", "-l", point], check=False, capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)
