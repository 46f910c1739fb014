"""Real services for the tests: a private dockerd or Podman, a Distribution registry, the
exporter.

Each one is started here and stopped by its fixture. A service that cannot start fails the
test loudly; nothing is skipped.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent

# A test marked with this runs on every engine that runs here: dockerd, rootful and rootless
# Podman (the `engine` fixture alone gives the first two).
EVERY_ENGINE = pytest.mark.parametrize("engine", ["dockerd", "podman", "podman_rootless"],
                                       indirect=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def need(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        raise RuntimeError(f"{binary} is not installed: run .ci/run (it installs the test deps)")
    return path


def wait_for(check, timeout: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except Exception as exc:
            last_exc = exc
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}; last error: {last_exc!r}")


def _stop(proc: subprocess.Popen, timeout: float = 15.0) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


@dataclass
class Dockerd:
    """A private Docker daemon with its own socket, data root and exec root."""

    root: Path
    proc: subprocess.Popen | None = None
    args: tuple[str, ...] = ()  # more dockerd flags, e.g. --registry-mirror

    # The engine interface the tests share with Podman: name, host, cli, RUN, local(),
    # image_id(), make_base_image(), build(), push(), pull(), stop() and close().
    name = "dockerd"
    RUN = ("--network", "none")  # options every run and create needs here

    def local(self, tag: str) -> str:
        """The name this engine gives an image built or imported as ``tag``."""
        return tag

    def image_id(self, ref: str) -> str:
        return self.cli("image", "inspect", "-f", "{{.Id}}", ref).strip()

    def push(self, ref: str) -> None:
        self.cli("push", ref)

    def pull(self, ref: str) -> None:
        self.cli("pull", ref)

    def close(self) -> None:
        self.stop()

    @property
    def socket(self) -> Path:
        return self.root / "docker.sock"

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"

    def start(self, timeout: float = 30.0) -> Dockerd:
        dockerd = need("dockerd")
        self.root.mkdir(parents=True, exist_ok=True)
        log = open(self.root / "dockerd.log", "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(
            [dockerd, "--host", self.host, "--data-root", str(self.root / "data"),
             "--exec-root", str(self.root / "exec"), "--pidfile", str(self.root / "docker.pid"),
             "--iptables=false", "--ip-masq=false", "--bridge=none", *self.args],
            stdout=log, stderr=log, start_new_session=True)
        transport = httpx.HTTPTransport(uds=str(self.socket))
        with httpx.Client(transport=transport, base_url="http://docker") as client:
            def ping() -> bool:
                if self.proc.poll() is not None:
                    tail = (self.root / "dockerd.log").read_text()[-2000:]
                    raise RuntimeError(f"dockerd exited: {tail}")
                return client.get("/_ping", timeout=1).text == "OK"
            try:
                wait_for(ping, timeout, "dockerd to answer /_ping")
            except TimeoutError:
                tail = (self.root / "dockerd.log").read_text()[-3000:]
                self.stop()
                raise RuntimeError(f"dockerd did not start:\n{tail}") from None
        return self

    def stop(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                # The containers here sleep and ignore SIGTERM: the daemon would wait 10 s
                # for each before killing it. They end as they would with the daemon anyway.
                with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                    running = self.cli("ps", "-q", timeout=10).split()
                    if running:
                        self.cli("kill", *running, check=False, timeout=20)
            _stop(self.proc, 30)
            self.proc = None
        # A killed daemon leaves its mounts behind; lazily unmount what is under our root.
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
        for target in sorted((m for m in mounts if m.startswith(str(self.root) + "/")),
                             key=len, reverse=True):
            subprocess.run(["umount", "-l", target], capture_output=True)

    def kill(self) -> None:
        """SIGKILL the daemon and its containerd, as an OOM kill of the service would."""
        if self.proc is None:
            return
        pidfile = self.root / "exec" / "containerd" / "containerd.pid"
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self.proc = None
        # Nothing reaps orphans in this sandbox: the killed containerd lingers as a zombie
        # whose pid dockerd would take for a live containerd. A host's init reaps it. It
        # may take a moment to die: wait until it is a zombie or gone, then drop its pidfile.
        with contextlib.suppress(OSError, ValueError):
            pid = int(pidfile.read_text())
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    stat = Path(f"/proc/{pid}/stat").read_text()
                except OSError:
                    break  # gone
                if stat.split(")")[-1].split()[0] == "Z":
                    break
                time.sleep(0.05)
            pidfile.unlink()

    def cli(self, *args: str, input: bytes | None = None, check: bool = True,
            cwd: str | Path | None = None, env: dict[str, str] | None = None,
            timeout: float = 120) -> str:
        """Run the docker CLI that ships with this engine (Debian's docker.io)."""
        docker = "/usr/bin/docker" if os.path.exists("/usr/bin/docker") else need("docker")
        full_env = {**os.environ, "DOCKER_HOST": self.host, "DOCKER_BUILDKIT": "1",
                    "DOCKER_CONFIG": str(self.root / "client-config"), **(env or {})}
        proc = subprocess.run([docker, *args], input=input, capture_output=True, env=full_env,
                              cwd=cwd, timeout=timeout)
        if check and proc.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args)} failed: {proc.stderr.decode()}")
        return proc.stdout.decode()

    def arch(self) -> str:
        """The engine's architecture as platforms name it (amd64, arm64)."""
        arch = self.cli("version", "-f", "{{.Server.Arch}}").strip()
        return {"x86_64": "amd64", "aarch64": "arm64"}.get(arch, arch)

    def make_base_image(self, tag: str) -> str:
        """Import a one-binary image (busybox-static); returns its image ID."""
        return self.cli("import", str(_busybox_tarball(self.root)), tag).strip()

    def build(self, tag: str, dockerfile: str, files: dict[str, str] | None = None) -> str:
        """docker build (BuildKit, no network) of a Dockerfile; returns the image ID."""
        ctx = _build_context(self.root, tag, dockerfile, files)
        self.cli("build", "--network", "none", "-t", tag, str(ctx))
        return self.cli("image", "inspect", "--format", "{{.Id}}", tag).strip()


@dataclass
class Podman:
    """A private Podman service (``podman system service``) and its CLI, sharing one storage.

    The service and every CLI call get the same global options and environment: storage
    root, run root, state directory (its events log is what the service's /events streams),
    file locks under that directory (not the machine's shared memory segment), and
    registries.conf, which marks ``insecure_registries`` as plain HTTP, as an administrator
    would. Podman still writes its blob-info cache to /var/lib/containers/cache (a fixed
    path for root).
    """

    root: Path
    insecure_registries: tuple[str, ...] = ()
    proc: subprocess.Popen | None = None

    name = "podman"
    RUN = ("--network", "none", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024")

    @property
    def socket(self) -> Path:
        return self.root / "podman.sock"

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"

    def _options(self) -> list[str]:
        return ["--root", str(self.root / "storage"), "--runroot", str(self.root / "run"),
                "--storage-driver", "overlay", "--tmpdir", str(self.root / "state"),
                "--network-config-dir", str(self.root / "networks"),
                "--events-backend", "file", "--cgroup-manager", "cgroupfs"]

    def _env(self) -> dict[str, str]:
        return {**os.environ, "TMPDIR": str(self.root / "tmp"),
                "CONTAINERS_CONF": str(self.root / "containers.conf"),
                "CONTAINERS_REGISTRIES_CONF": str(self.root / "registries.conf"),
                "REGISTRY_AUTH_FILE": str(self.root / "auth.json")}

    def _as(self) -> dict[str, Any]:
        """Who runs podman: root here."""
        return {}

    def start(self, timeout: float = 30.0) -> Podman:
        podman = need("podman")
        for sub in ("tmp", "networks"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        (self.root / "containers.conf").write_text('[engine]\nlock_type = "file"\n')
        (self.root / "registries.conf").write_text("".join(
            f'[[registry]]\nlocation = "{r}"\ninsecure = true\n' for r in
            self.insecure_registries))
        if not (self.root / "auth.json").exists():
            (self.root / "auth.json").write_text("{}")
        log = open(self.root / "podman.log", "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(
            [podman, *self._options(), "system", "service", "--time=0", self.host],
            stdout=log, stderr=log, start_new_session=True, env=self._env(), **self._as())
        transport = httpx.HTTPTransport(uds=str(self.socket))
        with httpx.Client(transport=transport, base_url="http://podman") as client:
            def ping() -> bool:
                if self.proc.poll() is not None:
                    tail = (self.root / "podman.log").read_text()[-2000:]
                    raise RuntimeError(f"podman system service exited: {tail}")
                return client.get("/_ping", timeout=1).text == "OK"
            try:
                wait_for(ping, timeout, "podman system service to answer /_ping")
            except (TimeoutError, RuntimeError) as exc:
                self.stop()
                raise RuntimeError(f"podman system service did not start: {exc}") from None
        return self

    def stop(self) -> None:
        """Stop the service; containers, images and storage stay, as with a daemon restart."""
        if self.proc is not None:
            _stop(self.proc, 30)
            self.proc = None

    def close(self) -> None:
        """Stop the service, remove every container (each has its own conmon, which outlives
        the service), image and volume, and unmount what is left under the root."""
        self.stop()
        self.cli("rm", "-a", "-f", "-t", "0", check=False)
        self.cli("system", "reset", "-f", check=False)
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
        for target in sorted((m for m in mounts if m.startswith(str(self.root) + "/")),
                             key=len, reverse=True):
            subprocess.run(["umount", "-l", target], capture_output=True)

    def cli(self, *args: str, input: bytes | None = None, check: bool = True,
            cwd: str | Path | None = None, env: dict[str, str] | None = None,
            timeout: float = 120) -> str:
        """Run podman on the service's storage (not through its socket)."""
        proc = subprocess.run([need("podman"), *self._options(), *args], input=input,
                              capture_output=True, env={**self._env(), **(env or {})},
                              cwd=cwd, timeout=timeout, **self._as())
        if check and proc.returncode != 0:
            raise RuntimeError(f"podman {' '.join(args)} failed: {proc.stderr.decode()}")
        return proc.stdout.decode()

    def local(self, tag: str) -> str:
        """Podman names what it builds or imports ``localhost/...``."""
        return f"localhost/{tag}"

    def image_id(self, ref: str) -> str:
        """The image ID as the API gives it (the CLI prints it without ``sha256:``)."""
        return "sha256:" + self.cli("image", "inspect", "-f", "{{.Id}}", ref).strip()

    def arch(self) -> str:
        return self.cli("info", "-f", "{{.Host.Arch}}").strip()

    def make_base_image(self, tag: str) -> str:
        """Import a one-binary image (busybox-static); returns its image ID."""
        tarball = _busybox_tarball(self.root)
        self.cli("import", str(tarball), tag)
        return self.image_id(tag)

    def build(self, tag: str, dockerfile: str, files: dict[str, str] | None = None) -> str:
        """podman build (no network) of a Dockerfile; returns the image ID."""
        ctx = _build_context(self.root, tag, dockerfile, files)
        self.cli("build", *self.RUN, "-t", tag, str(ctx))  # RUN steps need the ulimits too
        return self.image_id(tag)

    def push(self, ref: str) -> None:
        # Test registries are plain HTTP; registries.conf may not list them all.
        self.cli("push", "--tls-verify=false", ref)

    def pull(self, ref: str) -> None:
        self.cli("pull", "--tls-verify=false", ref)


ROOTLESS_USER = "hygiene-rootless"


@dataclass
class RootlessPodman(Podman):
    """Podman as an unprivileged user runs it: the service and every CLI call run as that
    user, in a user namespace mapped from its /etc/subuid and /etc/subgid ranges, with the
    socket where rootless Podman puts it, ``$XDG_RUNTIME_DIR/podman/podman.sock``.

    The tests run as root: the user is created when missing, with its ranges; the root
    directory is a fresh one, owned by the user, outside pytest's temporary tree (which only
    root may enter). A machine where rootless Podman cannot run fails here, loudly."""

    name = "podman-rootless"
    uid: int = 0
    gid: int = 0

    @classmethod
    def create(cls, insecure_registries: tuple[str, ...] = ()) -> RootlessPodman:
        if subprocess.run(["id", "-u", ROOTLESS_USER], capture_output=True).returncode:
            subprocess.run([need("useradd"), "--create-home", "--user-group", ROOTLESS_USER],
                           check=True, capture_output=True)
        entry = pwd.getpwnam(ROOTLESS_USER)
        for ranges, option in (("/etc/subuid", "--add-subuids"), ("/etc/subgid", "--add-subgids")):
            listed = Path(ranges).read_text() if Path(ranges).exists() else ""
            if not any(line.split(":")[0] == ROOTLESS_USER for line in listed.splitlines()):
                # useradd gives new users ranges only where the file already existed.
                subprocess.run([need("usermod"), option, "300000-365535", ROOTLESS_USER],
                               check=True, capture_output=True)
        root = Path(tempfile.mkdtemp(prefix="hygiene-rootless-"))
        os.chown(root, entry.pw_uid, entry.pw_gid)
        service = cls(root, insecure_registries, uid=entry.pw_uid, gid=entry.pw_gid)
        (root / "xdg").mkdir(mode=0o700)
        os.chown(root / "xdg", entry.pw_uid, entry.pw_gid)
        return service

    @property
    def socket(self) -> Path:
        return self.root / "xdg" / "podman" / "podman.sock"

    def _as(self) -> dict[str, Any]:
        return {"user": self.uid, "group": self.gid, "extra_groups": []}

    def _env(self) -> dict[str, str]:
        entry = pwd.getpwuid(self.uid)
        return {**super()._env(), "HOME": entry.pw_dir, "USER": entry.pw_name,
                "LOGNAME": entry.pw_name, "XDG_RUNTIME_DIR": str(self.root / "xdg")}

    def start(self, timeout: float = 30.0) -> Podman:
        # Files the tests write for podman (configuration, build contexts) are the user's.
        for sub in ("tmp", "networks", "build", "xdg/podman"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        subprocess.run(["chown", "-R", f"{self.uid}:{self.gid}", str(self.root)], check=True)
        super().start(timeout)
        rootless = self.cli("info", "-f", "{{.Host.Security.Rootless}}").strip()
        if rootless != "true":
            self.close()
            raise RuntimeError(f"podman as {ROOTLESS_USER} does not say it is rootless: "
                               f"{rootless!r}")
        return self

    def close(self) -> None:
        super().close()
        shutil.rmtree(self.root, ignore_errors=True)


def _busybox_tarball(root: Path) -> Path:
    """A root file system with busybox-static as /bin/busybox and /bin/sh, as a tarball."""
    busybox = "/bin/busybox"
    if not os.path.exists(busybox):
        raise RuntimeError("busybox-static is not installed: run .ci/run")
    tree = root / "busybox-rootfs"
    (tree / "bin").mkdir(parents=True, exist_ok=True)
    shutil.copy(busybox, tree / "bin" / "busybox")
    with contextlib.suppress(FileExistsError):
        (tree / "bin" / "sh").symlink_to("busybox")
    tarball = root / "busybox.tar"
    subprocess.run(["tar", "-C", str(tree), "-cf", str(tarball), "."], check=True)
    return tarball


def _build_context(root: Path, tag: str, dockerfile: str, files: dict[str, str] | None) -> Path:
    ctx = root / "build" / f"{tag.replace('/', '_').replace(':', '_')}-{time.time_ns()}"
    ctx.mkdir(parents=True)
    (ctx / "Dockerfile").write_text(dockerfile)
    for name, content in (files or {}).items():
        (ctx / name).write_text(content)
    return ctx


@dataclass
class Registry:
    """CNCF Distribution (Debian's docker-registry) on a loopback port."""

    root: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, extra_config: str = "") -> Registry:
        binary = need("docker-registry")
        self.root.mkdir(parents=True, exist_ok=True)
        config = self.root / "config.yml"
        config.write_text(
            "version: 0.1\n"
            "log: {level: warn}\n"
            f"storage:\n  filesystem: {{rootdirectory: {self.root / 'data'}}}\n"
            "  delete: {enabled: true}\n"
            f"http:\n  addr: {self.address}\n" + extra_config)
        log = open(self.root / "registry.log", "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen([binary, "serve", str(config)], stdout=log, stderr=log,
                                     start_new_session=True)
        scheme = "https" if "tls:" in extra_config else "http"
        try:
            wait_for(lambda: httpx.get(f"{scheme}://{self.address}/v2/", timeout=1,
                                       verify=False).status_code in (200, 401),
                     15, "the registry to answer /v2/")
        except TimeoutError:
            tail = (self.root / "registry.log").read_text()[-2000:]
            self.stop()
            raise RuntimeError(f"the registry did not start:\n{tail}") from None
        return self

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc)
            self.proc = None


@dataclass
class ExporterProcess:
    """The exporter, run the way users run it: its console entry point in a subprocess."""

    args: list[str]
    log_path: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None
    env: dict[str, str] = field(default_factory=dict)
    prefix: list[str] = field(default_factory=list)  # e.g. prlimit --nofile=1024:1024 --

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, wait_ready: bool = True) -> ExporterProcess:
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the process
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_HYGIENE_")}
        env.update(self.env)
        # Each exporter gets its own state file unless the test names one, and Docker Hub
        # (which is not on loopback) stays off unless the test points it at a stand-in.
        state = [] if "--state.path" in self.args else [
            "--state.path", str(self.log_path.with_suffix(".state.db"))]
        if not any(a.startswith("--hub.") for a in self.args):
            state += ["--hub.enabled", "false"]
        self.proc = subprocess.Popen(
            [*self.prefix, sys.executable, "-m", "exporter", "--web.listen-address",
             f"127.0.0.1:{self.port}", *state, *self.args],
            stdout=log, stderr=log, start_new_session=True, env=env, cwd=ROOT)
        if wait_ready:
            wait_for(lambda: self._alive() and httpx.get(f"{self.url}/-/ready", timeout=1)
                     .status_code == 200, 30, "the exporter to be ready")
        return self

    def _alive(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"exporter exited: {self.log()}")
        return True

    def log(self) -> str:
        return self.log_path.read_text()

    def scrape_text(self) -> str:
        response = httpx.get(f"{self.url}/metrics", timeout=10)
        response.raise_for_status()
        return response.text

    def scrape(self) -> Metrics:
        return Metrics.parse(self.scrape_text())

    def wait_metrics(self, check, timeout: float = 30, what: str = "metrics") -> Metrics:
        def attempt():
            m = self.scrape()
            return m if check(m) else None
        return wait_for(attempt, timeout, what, interval=0.2)

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc)
            self.proc = None


def _serve(args: list[str], log_path: Path, ready_url: str) -> subprocess.Popen:
    """Start a Prometheus-project server and wait until it says it is ready; fail loudly
    with its log when it exits or never is."""
    name = Path(args[0]).name
    log = open(log_path, "ab")  # noqa: SIM115 - owned by the process
    proc = subprocess.Popen(args, stdout=log, stderr=log, start_new_session=True,
                            cwd=log_path.parent)

    def ready() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited")
        return httpx.get(ready_url, timeout=1).status_code == 200

    try:
        wait_for(ready, 30, f"{name} to be ready")
    except (TimeoutError, RuntimeError) as exc:
        _stop(proc)
        tail = log_path.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{name} did not start: {exc}\n{tail}") from None
    return proc


class Prometheus:
    """The prometheus binary on a loopback port, with its own TSDB directory."""

    def __init__(self, root: Path, targets: list[str], rules: list[Path],
                 job: str = "docker-hygiene", alertmanager: str | None = None) -> None:
        self.root = root
        self.job = job
        self.alertmanager = alertmanager  # host:port that alerts are sent to
        self.port = free_port()
        self.targets = targets
        self.rules = rules
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Prometheus:
        binary = need("prometheus")
        self.root.mkdir(parents=True, exist_ok=True)
        config = self.root / "prometheus.yml"
        settings: dict = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s",
                       "evaluation_interval": "1s"},
            "rule_files": [str(r) for r in self.rules],
            "scrape_configs": [{"job_name": self.job,
                                "static_configs": [{"targets": self.targets}]}],
        }
        if self.alertmanager:
            settings["alerting"] = {"alertmanagers": [
                {"static_configs": [{"targets": [self.alertmanager]}]}]}
        config.write_text(yaml.safe_dump(settings))
        self.proc = _serve(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={self.root / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            self.root / "prometheus.log", f"{self.url}/-/ready")
        return self

    def log(self) -> str:
        return (self.root / "prometheus.log").read_text(errors="replace")

    def api(self, path: str, **params: str) -> dict:
        r = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=30)
        body = r.json()
        if body.get("status") != "success":
            raise AssertionError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict]:
        return self.api("query", query=expr)["result"]

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc)
            self.proc = None


class Alertmanager:
    """The prometheus-alertmanager binary on a loopback port, clustering off."""

    def __init__(self, root: Path, config: dict) -> None:
        self.root = root
        self.config = config
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> Alertmanager:
        binary = need("prometheus-alertmanager")
        self.root.mkdir(parents=True, exist_ok=True)
        config = self.root / "alertmanager.yml"
        config.write_text(yaml.safe_dump(self.config))
        self.proc = _serve(
            [binary, f"--config.file={config}", f"--storage.path={self.root / 'data'}",
             f"--web.listen-address={self.address}", "--cluster.listen-address="],
            self.root / "alertmanager.log", f"http://{self.address}/-/ready")
        return self

    def log(self) -> str:
        return (self.root / "alertmanager.log").read_text(errors="replace")

    def alerts(self) -> list[dict]:
        return httpx.get(f"http://{self.address}/api/v2/alerts", timeout=10).json()

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc)
            self.proc = None


class Metrics:
    """A parsed scrape: look samples up by name and labels."""

    def __init__(self, samples: list[tuple[str, dict[str, str], float]]) -> None:
        self.samples = samples

    @classmethod
    def parse(cls, text: str) -> Metrics:
        samples = []
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                samples.append((s.name, dict(s.labels), s.value))
        return cls(samples)

    def select(self, name: str, **labels: str) -> list[tuple[dict[str, str], float]]:
        return [(lb, v) for n, lb, v in self.samples
                if n == name and all(lb.get(k) == want for k, want in labels.items())]

    def get(self, name: str, **labels: str) -> float | None:
        found = self.select(name, **labels)
        if len(found) > 1:
            raise AssertionError(f"{name}{labels} matches {len(found)} series")
        return found[0][1] if found else None

    def names(self) -> set[str]:
        return {n for n, _, _ in self.samples}


@contextlib.contextmanager
def running(service) -> Iterator:
    try:
        yield service
    finally:
        service.stop()
