"""The container image, built from the repository's Dockerfile and run as users run it.

Docker Hub is out of reach, so the base is made here: a Debian bookworm root filesystem from
debootstrap (Python 3.11, pip, venv) imported into the private dockerd, cached as a tarball
under /tmp across runs. The build runs without network: the Python dependencies are
downloaded on the host first and reach pip through wheels/ in the build context.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter import __version__
from tests.services import ROOT, Dockerd, Metrics, need, wait_for

# Bump to rebuild the cached base (e.g. after changing the package list).
BASE_VERSION = "bookworm-minbase-python3-1"
BASE_SUITE = "bookworm"
BASE_PACKAGES = "python3,python3-pip,python3-venv"
BASE_PYTHON = "3.11"  # bookworm's Python, for the wheels downloaded on the host
BASE_GLIBC = 36  # bookworm's glibc 2.36: manylinux wheels up to manylinux_2_36 run on it
CACHE = Path(os.environ.get("DOCKER_HYGIENE_TEST_CACHE", "/tmp/docker-hygiene-exporter-cache"))
IMAGE = "docker-hygiene-exporter:test"
UID = "65532"


def debian_mirror() -> str:
    """The Debian mirror apt uses here (one-line and deb822 sources), for debootstrap."""
    sources = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in sources:
        if not path.is_file():
            continue
        text = path.read_text()
        for m in re.finditer(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)", text, re.M):
            if m.group(2) == BASE_SUITE:
                return m.group(1)
        for stanza in re.split(r"\n\s*\n", text):
            fields = dict(re.findall(r"^(\w[\w-]*):\s*(.*)$", stanza, re.M))
            if BASE_SUITE in fields.get("Suites", "").split() and fields.get("URIs"):
                return fields["URIs"].split()[0]
    return "http://deb.debian.org/debian"


def _unmount_below(tree: Path) -> None:
    """debootstrap mounts /proc and /sys in the tree; never delete through a mount."""
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    for mount in sorted((m for m in mounts if m.startswith(f"{tree}/")), reverse=True):
        subprocess.run(["umount", "-l", mount], check=False)


def base_tarball() -> Path:
    """A bookworm root filesystem with Python, made once and kept under CACHE."""
    CACHE.mkdir(parents=True, exist_ok=True)
    tarball = CACHE / f"python-base-{BASE_VERSION}.tar"
    with open(CACHE / "python-base.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a parallel run waits instead of building twice
        if tarball.exists():
            return tarball
        debootstrap = need("debootstrap")
        tree = CACHE / f"tree-{os.getpid()}"
        try:
            proc = subprocess.run(
                [debootstrap, "--variant=minbase", f"--include={BASE_PACKAGES}", BASE_SUITE,
                 str(tree), debian_mirror()], capture_output=True, text=True, timeout=1800)
            if proc.returncode != 0:
                raise RuntimeError(f"debootstrap failed:\n{proc.stdout[-3000:]}"
                                   f"{proc.stderr[-3000:]}")
            _unmount_below(tree)
            for junk in ("var/cache/apt", "var/lib/apt/lists", "usr/share/doc",
                         "usr/share/man", "usr/share/locale", "usr/share/info"):
                for child in (tree / junk).glob("*"):
                    if child.is_dir() and not child.is_symlink():
                        shutil.rmtree(child)
                    else:
                        child.unlink()
            partial = tarball.with_suffix(".partial")
            subprocess.run(["tar", "-C", str(tree), "--numeric-owner", "-cf", str(partial),
                            "."], check=True)
            partial.rename(tarball)
        finally:
            _unmount_below(tree)
            shutil.rmtree(tree, ignore_errors=True)
    return tarball


def download_wheels(dest: Path) -> None:
    """Wheels of the dependencies and the build backend, for the base's Python and glibc."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    wanted = [*pyproject["project"]["dependencies"], *pyproject["build-system"]["requires"]]
    arch = platform.machine()
    platforms = [f"manylinux_2_{minor}_{arch}" for minor in range(5, BASE_GLIBC + 1)]
    platforms += [f"manylinux{tag}_{arch}" for tag in ("2014", "2010", "1")]
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check",
           "-d", str(dest), "--only-binary=:all:", "--python-version", BASE_PYTHON,
           "--implementation", "cp", "--abi", f"cp{BASE_PYTHON.replace('.', '')}"]
    for tag in platforms:
        cmd += ["--platform", tag]
    proc = subprocess.run([*cmd, *wanted], capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"pip download failed: {proc.stderr[-3000:]}")


def build_context(dest: Path) -> Path:
    """The repository as a user checks it out (the .dockerignore decides), plus wheels/."""
    skip = shutil.ignore_patterns(".git", ".venv", "__pycache__", ".pytest_cache",
                                  ".hypothesis", ".ruff_cache", "build", "dist")
    shutil.copytree(ROOT, dest, ignore=skip, symlinks=True)
    download_wheels(dest / "wheels")
    return dest


@pytest.fixture(scope="module")
def image(dockerd: Dockerd, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The image built FROM the local base, on the session's private dockerd."""
    timings: dict[str, float] = {}
    started = time.monotonic()
    tarball = base_tarball()
    timings["base tarball"] = time.monotonic() - started
    base = f"local/python-base:{BASE_VERSION}"
    mark = time.monotonic()
    dockerd.cli("import", str(tarball), base, timeout=600)
    timings["import"] = time.monotonic() - mark
    mark = time.monotonic()
    ctx = build_context(tmp_path_factory.mktemp("image-context") / "ctx")
    timings["context and wheels"] = time.monotonic() - mark
    mark = time.monotonic()
    dockerd.cli("build", "--network", "none", "--build-arg", f"BASE={base}", "-t", IMAGE,
                str(ctx), timeout=900)
    timings["build"] = time.monotonic() - mark
    print("image timings: " + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()))
    yield IMAGE
    dockerd.cli("rmi", "-f", IMAGE, base, check=False)


def inspect(dockerd: Dockerd, what: str, name: str) -> dict:
    return json.loads(dockerd.cli(what, "inspect", name))[0]


def docker_exec(dockerd: Dockerd, container: str, *cmd: str,
                env: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """`docker exec` as the container's own user; the caller checks the exit code."""
    docker = "/usr/bin/docker" if os.path.exists("/usr/bin/docker") else need("docker")
    flags = [arg for e in env for arg in ("-e", e)]
    return subprocess.run([docker, "exec", *flags, container, *cmd], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "DOCKER_HOST": dockerd.host})


def in_python(dockerd: Dockerd, container: str, code: str) -> str:
    """Python inside the container: the image has no curl or other tools to ask with."""
    proc = docker_exec(dockerd, container, "python3", "-c", code)
    if proc.returncode != 0:
        raise AssertionError(f"python in {container} failed: {proc.stderr}")
    return proc.stdout


def logs(dockerd: Dockerd, container: str) -> str:
    docker = "/usr/bin/docker" if os.path.exists("/usr/bin/docker") else need("docker")
    return subprocess.run([docker, "logs", container], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "DOCKER_HOST": dockerd.host}).stderr


def test_image_declares_user_port_volume_healthcheck(dockerd: Dockerd, image: str) -> None:
    """What `docker run IMAGE` gets without flags: non-root, the port, state on a volume."""
    config = inspect(dockerd, "image", image)["Config"]
    assert config["User"].split(":")[0] == UID
    assert config["Entrypoint"] == ["docker-hygiene-exporter"]
    assert "10221/tcp" in config["ExposedPorts"]
    assert "/var/lib/docker-hygiene-exporter" in config["Volumes"]
    assert ("DOCKER_HYGIENE_STATE_PATH=/var/lib/docker-hygiene-exporter/state.db"
            in config["Env"])
    test = config["Healthcheck"]["Test"]
    assert test[0] == "CMD" and "curl" not in " ".join(test)


def test_version_runs_in_the_image(dockerd: Dockerd, image: str) -> None:
    out = dockerd.cli("run", "--rm", "--network", "none", "--read-only", image, "--version")
    assert out.strip() == f"docker-hygiene-exporter {__version__}"


@contextlib.contextmanager
def container(dockerd: Dockerd, image: str, *flags: str) -> Iterator[str]:
    name = f"hygiene-exporter-{os.getpid()}-{time.monotonic_ns()}"
    dockerd.cli("run", "-d", "--name", name, *flags, image)
    try:
        yield name
    finally:
        dockerd.cli("rm", "-f", "-v", name, check=False)


def test_runs_read_only_non_root_healthy_and_reads_the_engine(dockerd: Dockerd,
                                                              image: str) -> None:
    """The hardened run: read-only root, no capabilities, no network, socket by group."""
    gid = str(os.stat(dockerd.socket).st_gid)
    with container(dockerd, image, "--network", "none", "--read-only", "--cap-drop", "ALL",
                   "--security-opt", "no-new-privileges", "--health-interval", "1s",
                   "-v", f"{dockerd.socket}:/var/run/docker.sock", "--group-add", gid) as name:
        def healthy() -> bool:
            state = inspect(dockerd, "container", name)["State"]
            if not state["Running"]:
                raise AssertionError(f"container exited: {logs(dockerd, name)}")
            return state["Health"]["Status"] == "healthy"
        wait_for(healthy, 60, "the container's health check to pass", interval=0.5)

        status = in_python(dockerd, name, "print(open('/proc/1/status').read())")
        uids = re.search(r"^Uid:\s+(.*)$", status, re.M).group(1).split()
        assert uids == [UID] * 4, status
        assert re.search(r"^CapEff:\s+0+$", status, re.M), status
        written = docker_exec(dockerd, name, "python3", "-c", "open('/opt/x', 'w')")
        assert written.returncode != 0 and "Read-only file system" in written.stderr

        # The image's own HEALTHCHECK command by hand: 0 now, 1 against a port nobody serves.
        check = inspect(dockerd, "image", image)["Config"]["Healthcheck"]["Test"][1:]
        assert docker_exec(dockerd, name, *check).returncode == 0
        dead = docker_exec(dockerd, name, *check, env=("DOCKER_HYGIENE_WEB_LISTEN_ADDRESS=:1",))
        assert dead.returncode == 1 and "unhealthy" in dead.stderr, dead

        scrape = ("import urllib.request; print(urllib.request.urlopen("
                  "'http://127.0.0.1:10221/metrics', timeout=5).read().decode())")

        def engine_read() -> Metrics | None:
            m = Metrics.parse(in_python(dockerd, name, scrape))
            listed = m.select("docker_image_info", image=image)
            return m if m.get("docker_up") == 1 and listed else None
        m = wait_for(engine_read, 30, "docker_up 1 and the image itself listed", interval=0.5)
        assert m.get("docker_exporter_state_persistent") == 1  # the volume is writable
        assert m.get("docker_exporter_build_info", version=__version__) == 1

        started = time.monotonic()
        dockerd.cli("stop", "-t", "20", name)
        assert time.monotonic() - started < 10, "SIGTERM should stop it promptly"
        assert inspect(dockerd, "container", name)["State"]["ExitCode"] == 0
        assert "stopped" in logs(dockerd, name)
