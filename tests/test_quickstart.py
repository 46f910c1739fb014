"""The README's first shell block, run as written on this Debian host with its system Python.

A fresh clone, a fresh HOME, Debian's /usr/bin/python3 alone on PATH (no pyenv, no venv of
the suite): the block installs what it needs itself and ends with the exporter serving on
the default port. Only DOCKER_HOST (the suite's dockerd) and switches that keep the exporter
off the network's registries come from outside the block.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import httpx

from tests.services import ROOT, Dockerd, Metrics, _stop, need

PATH = "/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin"
PORT = 10221  # the block serves on the default port: no other test may use it


def first_shell_block() -> str:
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"^```sh\n(.*?)^```$", readme, re.M | re.S)
    assert block, "README.md has no ```sh block"
    return block.group(1)


def test_first_block_of_the_readme_runs_as_written(dockerd: Dockerd, tmp_path: Path) -> None:
    block = first_shell_block()
    assert "docker-hygiene-exporter" in block.splitlines()[-1], "the block must end serving"

    # Debian's Python, which refuses a plain `pip install` (PEP 668), and nothing else.
    assert shutil.which("python3", path=PATH) == "/usr/bin/python3"
    assert "pyenv" not in PATH and not list(Path("/usr/local/bin").glob("python*"))
    assert list(Path("/usr/lib").glob("python3*/EXTERNALLY-MANAGED")), "not a PEP 668 Python"

    with socket.socket() as s:  # fail here, not with a confusing scrape of someone else's
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is no listener
        try:
            s.bind(("0.0.0.0", PORT))
        except OSError as exc:
            raise AssertionError(f"port {PORT} is taken, the block cannot serve: {exc}") from exc

    clone = tmp_path / "clone"
    subprocess.run([need("git"), "clone", "-q", str(ROOT), str(clone)], check=True, timeout=120)
    home = tmp_path / "home"
    home.mkdir()
    env = {
        "PATH": PATH, "HOME": str(home), "LANG": "C.UTF-8",
        "DOCKER_HOST": f"unix://{dockerd.socket}",
        # Traffic stays on loopback: no registry, Hub or tag-list requests from the exporter.
        "DOCKER_HYGIENE_UPSTREAM_MODE": "off", "DOCKER_HYGIENE_HUB_ENABLED": "false",
        "DOCKER_HYGIENE_VERSIONS_ENABLED": "false",
    }
    log = tmp_path / "block.log"
    started = time.monotonic()
    with open(log, "wb") as out:
        proc = subprocess.Popen(["sh", "-c", block], cwd=clone, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = started + 300
        while True:  # wait_for would retry through the block's exit: fail at once instead
            if proc.poll() is not None:
                raise AssertionError(f"the block exited with {proc.returncode}:\n"
                                     f"{log.read_text()[-4000:]}")
            if time.monotonic() > deadline:
                raise AssertionError("the block did not serve docker_up 1 within 300s:\n"
                                     f"{log.read_text()[-4000:]}")
            try:
                m = Metrics.parse(httpx.get(f"http://127.0.0.1:{PORT}/metrics", timeout=5).text)
                if m.get("docker_up") == 1:
                    break
            except httpx.TransportError:
                pass
            time.sleep(1)
        # It is the block's exporter, reading the suite's dockerd.
        assert m.select("docker_image_info", image="hygiene-base:1"), log.read_text()[-4000:]
        print(f"README block serving after {time.monotonic() - started:.0f}s")
    finally:
        _stop(proc)
    assert proc.returncode is not None
