"""``report`` against a real dockerd and the real registry: text and JSON, drift and newer
versions from the running exporter's state store (saying how old that is), ``--check``
running one cycle itself, and exit 1 with one line when the engine is down."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from exporter.state import read_snapshot
from tests.services import ROOT, Dockerd, Registry, free_port
from tests.test_upstream import publish_elsewhere, push_version, status


@dataclass
class Scene:
    dockerd: Dockerd
    registry: Registry
    stale_ref: str
    drift_ref: str

    def args(self, tmp: Path) -> list[str]:
        return ["--docker.host", self.dockerd.host, "--hub.enabled", "false",
                "--upstream.include", f"^{self.registry.address}/hygiene/report-",
                "--docker.config", str(tmp / "none.json")]


@pytest.fixture(scope="module")
def scene(dockerd: Dockerd, registry: Registry) -> Iterator[Scene]:
    """A stale container, a drifted tag with a newer version, and volumes used and unused."""
    d = dockerd
    stale_ref = f"{registry.address}/hygiene/report-stale:latest"
    push_version(d, stale_ref, "report stale one")
    d.cli("rmi", stale_ref)
    d.cli("pull", stale_ref)
    run = ("--network", "none")
    d.cli("run", "-d", "--name", "hygiene-report-stale", *run, stale_ref,
          "/bin/busybox", "sleep", "3600")
    push_version(d, stale_ref, "report stale two")
    drift_ref = f"{registry.address}/hygiene/report-drift:1.0"
    push_version(d, drift_ref, "report drift one")
    d.cli("rmi", drift_ref)
    d.cli("pull", drift_ref)
    d.cli("run", "-d", "--name", "hygiene-report-drift", *run, drift_ref,
          "/bin/busybox", "sleep", "3600")
    publish_elsewhere(d, drift_ref, "report drift two")
    newer = drift_ref.replace(":1.0", ":1.1")
    push_version(d, newer, "report drift newer")
    d.cli("rmi", newer)
    fill = "/bin/busybox dd if=/dev/zero of=/v/data bs=1000 count=300"
    d.cli("run", "--name", "hygiene-report-volume-user", *run, "-v",
          "hygiene-report-used:/v", "hygiene-base:1", "/bin/busybox", "sh", "-c", fill)
    d.cli("run", "--rm", *run, "-v", "hygiene-report-unused:/v", "hygiene-base:1",
          "/bin/busybox", "sh", "-c", fill)
    yield Scene(d, registry, stale_ref, drift_ref)
    d.cli("rm", "-f", "hygiene-report-stale", "hygiene-report-drift",
          "hygiene-report-volume-user")
    d.cli("volume", "rm", "hygiene-report-used", "hygiene-report-unused")


def report(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_HYGIENE_")}
    return subprocess.run([sys.executable, "-m", "exporter", "report", *args],
                          capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)


def section(text: str, header: str) -> str:
    """The block of the report under the line that starts with ``header``."""
    blocks = [b for b in text.split("\n\n") if b.startswith(header)]
    assert len(blocks) == 1, (header, text)
    return blocks[0]


def line(text: str, start: str) -> str:
    found = [x for x in text.splitlines() if x.startswith(start)]
    assert len(found) == 1, (start, text)
    return found[0]


def test_report_reads_what_the_running_exporter_saved(scene: Scene, exporter_factory,
                                                      tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    args = [*scene.args(tmp_path), "--state.path", str(state)]
    exp = exporter_factory(*args, "--upstream.interval", "2s",
                           "--collector.engine.interval", "1s")
    exp.wait_metrics(lambda m: status(m, scene.drift_ref) == "drifted" and m.get(
        "docker_image_versions_behind", image=scene.drift_ref) == 1, timeout=60,
                     what="drift and a newer version")

    def saved() -> bool:
        up, versions = read_snapshot(str(state), "upstream"), read_snapshot(str(state),
                                                                            "versions")
        return bool(up and versions and '"drifted"' in up[1] and '"1.1"' in versions[1])
    from tests.services import wait_for
    wait_for(saved, 30, "the exporter to save its snapshots")

    out = report(*args)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert re.search(r"^Drift: as the running exporter knew it (just now|\d+ seconds ago) \(state "
                     rf"store {re.escape(str(state))}\)$", text, re.M), text
    assert "Newer versions: as the running exporter knew it" in text
    containers = section(text, "CONTAINERS NEEDING ATTENTION")
    assert "stale" in line(containers, "hygiene-report-stale ")
    drift = line(containers, "hygiene-report-drift ")
    assert "drifted for" in drift and "newer version 1.1 (1 behind)" in drift
    tag = line(section(text, "TAGS AGAINST THEIR REGISTRIES"), scene.drift_ref + " ")
    assert " drifted " in tag and "1.1 (1 behind" in tag and "hygiene-report-drift" in tag
    # Volumes, each with its size, unused first.
    volumes = text[text.index("VOLUMES: "):].split("\n\n")[0]
    assert re.search(r"^hygiene-report-unused +300kB +0$", volumes, re.M), volumes
    assert re.search(r"^hygiene-report-used +300kB +1$", volumes, re.M), volumes
    assert volumes.index("hygiene-report-unused") < volumes.index("hygiene-report-used")
    assert re.search(r"^volumes +\d+ +\d+ +[\d.]+[kMG]?B ", text, re.M)

    # JSON: the same document as the page's twin.
    out = report(*args, "--format", "json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    page = httpx.get(exp.url + "/status.json").json()
    assert set(doc) == set(page)
    for key in ("containers", "tags", "images"):
        assert set(doc[key][0]) == set(page[key][0]), key
    containers = {c["name"]: c for c in doc["containers"]}
    assert containers["hygiene-report-stale"]["problems"][-1] == "stale"
    assert containers["hygiene-report-drift"]["problems"] == ["drifted", "newer_version"]
    assert containers == {c["name"]: c for c in page["containers"]}
    assert doc["drift"]["origin"] == "state store" and doc["drift"]["detail"] == str(state)
    assert doc["pulls"] == {"host": None, "hub": None, "registry": None, "harbor": None}

    # Once the exporter is gone, the report says how old what it saved is.
    exp.stop()
    db = sqlite3.connect(state)
    with db:
        db.execute("UPDATE snapshots SET taken = ?", (time.time() - 3 * 86400 - 60,))
    db.close()
    text = report(*args).stdout
    assert f"Drift: as the running exporter knew it 3 days ago (state store {state})" in text
    assert "drifted" in line(section(text, "CONTAINERS NEEDING"), "hygiene-report-drift ")


def test_report_check_runs_one_cycle_itself(scene: Scene, tmp_path: Path) -> None:
    state = tmp_path / "fresh" / "state.db"
    args = [*scene.args(tmp_path), "--state.path", str(state)]
    text = report(*args).stdout
    assert f"Drift: not known (nothing saved in {state}: run the exporter with this " \
           "state.path, or report --check)" in text
    # Not known is not drifted: only the stale container needs attention.
    containers = section(text, "CONTAINERS NEEDING ATTENTION")
    assert "hygiene-report-stale " in containers and "hygiene-report-drift" not in containers
    assert not state.exists()  # reading never creates the store

    out = report(*args, "--check")
    assert out.returncode == 0, out.stderr
    assert "Drift: checked now by this report" in out.stdout
    assert "Newer versions: checked now by this report" in out.stdout
    drift = line(section(out.stdout, "CONTAINERS NEEDING"), "hygiene-report-drift ")
    assert "drifted" in drift and "newer version 1.1 (1 behind)" in drift
    doc = json.loads(report(*args, "--check", "--format", "json").stdout)
    assert doc["drift"]["origin"] == "check"
    sources = {s["name"]: s["state"] for s in doc["sources"]}
    assert sources == {"engine": "ok", "disk": "ok", "upstream": "ok", "versions": "ok"}
    tags = {t["image"]: t for t in doc["tags"]}
    assert tags[scene.drift_ref]["upstream"] == "drifted"
    assert tags[scene.drift_ref]["newer_version"] == "1.1"


def test_report_exits_1_naming_the_host_when_the_engine_is_down(tmp_path: Path) -> None:
    d = Dockerd(tmp_path / "d").start()
    d.stop()  # a daemon that was there and is not any more
    for fmt in ("text", "json"):
        out = report("--docker.host", d.host, "--format", fmt)
        assert out.returncode == 1 and out.stdout == ""
        assert out.stderr == (f"docker-hygiene-exporter report: cannot reach the Docker Engine "
                              f"at {d.host}: the socket does not exist: is dockerd running, "
                              "and does docker.host name its socket?\n")
    host = f"tcp://127.0.0.1:{free_port()}"
    out = report("--docker.host", host)
    assert out.returncode == 1 and out.stderr.count("\n") == 1
    assert out.stderr.startswith(f"docker-hygiene-exporter report: cannot reach the Docker "
                                 f"Engine at {host}: connection refused")


def test_report_on_a_kubernetes_node_says_where_to_look() -> None:
    out = report("--cri.endpoint", "unix:///run/containerd/containerd.sock")
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr == ("docker-hygiene-exporter report: report reads Docker or Podman "
                          "only; on a Kubernetes node the running exporter's /status.json is "
                          "the same document\n")
