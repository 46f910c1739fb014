"""Local builds on Docker's containerd image store are never named to Docker Hub.

That store gives every tagged image a RepoDigest, local builds included, so a RepoDigest no
longer proves a pull (decisions/provenance.py). Against the stand-in engine of Docker 29
(tests/engine_standin.py, moby's spec of API 1.52 and 1.53) holding a real image pulled as
``hygieneorg/tool:1`` (a Docker Hub name; its content is in the real test registry) and one
built here as ``mycorp/secret-app:1``, the Docker Hub stand-in (tests/standins.py) must never
be asked about the build: on 1.53 because the engine says what was pulled (Identity), on
1.52 because only what this exporter saw pulled counts, remembered across a restart.
"""

from __future__ import annotations

import time
from pathlib import Path

from tests.engine_standin import DOCKER_29_0, DOCKER_29_2, EngineVersion, StandinEngine
from tests.services import Dockerd, ExporterProcess, Registry
from tests.standins import DockerHub

TOOL, SECRET = "hygieneorg/tool", "mycorp/secret-app"
HUB = {"hygieneorg/tool": (1234, 5, "2026-01-01T00:00:00Z"),
       "mycorp/secret-app": (1, 0, "2026-01-01T00:00:00Z")}


def _images(dockerd: Dockerd, registry: Registry) -> None:
    """Two images in the registry: one under the Docker Hub name's path (so the stand-in can
    pull ``hygieneorg/tool:1`` from it), one to be the local build's content."""
    for repo, content in ((TOOL, "tool"), ("hygiene/secret-src", "secret")):
        ref = f"{registry.address}/{repo}:1"
        dockerd.build(ref, "FROM hygiene-base:1\nCOPY v /v\n", {"v": f"provenance {content}"})
        dockerd.cli("push", ref)


def _host(tmp: Path, version: EngineVersion, registry: Registry) -> StandinEngine:
    engine = StandinEngine(tmp / f"engine-{version.api}.sock", version)
    engine.pull(f"{TOOL}:1", registry.address)
    source = f"{registry.address}/hygiene/secret-src:1"
    engine.pull(source, registry.address)
    engine.build(f"{SECRET}:1", source)
    engine.records.pop(source)  # only the local build's name is left on that image
    return engine


def _exporter(engine: StandinEngine, hub: DockerHub, tmp: Path, n: int) -> ExporterProcess:
    # Drift and versions are kept to the local registry (no traffic leaves loopback); the
    # Hub source asks the stand-in about every repository it takes for pulled from Hub.
    return ExporterProcess(
        ["--docker.host", engine.host, "--collector.engine.interval", "500ms",
         "--collector.disk.interval", "1h", "--hub.url", hub.url, "--hub.interval", "1s",
         "--upstream.include", r"^127\.0\.0\.1", "--state.path", str(tmp / "state.db")],
        tmp / f"exporter-{n}.log").start()


def _asked(hub: DockerHub) -> str:
    return " ".join(hub.requests)


def test_engine_that_says_what_was_pulled(tmp_path: Path, dockerd: Dockerd,
                                          registry: Registry) -> None:
    _images(dockerd, registry)
    engine = _host(tmp_path, DOCKER_29_2, registry)
    hub = DockerHub(HUB)
    exp = _exporter(engine, hub, tmp_path, 0)
    try:
        exp.wait_metrics(lambda m: m.get("docker_hub_repository_pulls_total",
                                         repository=TOOL) == 1234, what="the pulled repository")
        time.sleep(3)  # three more Hub cycles
        m = exp.scrape()
        # Both images carry a Docker Hub RepoDigest on this store ...
        infos = {lb["image"]: lb["digest"] for lb, _ in m.select("docker_image_info")}
        assert infos[f"{TOOL}:1"] and f"{SECRET}:1" in infos
        # ... but the engine says which was pulled: the build's name never reaches the Hub.
        assert SECRET not in _asked(hub), hub.requests
        assert infos[f"{SECRET}:1"] == ""
    finally:
        exp.stop()
        hub.stop()
        engine.stop()


def test_engine_that_does_not_say_needs_a_pull_seen(tmp_path: Path, dockerd: Dockerd,
                                                    registry: Registry) -> None:
    _images(dockerd, registry)
    engine = _host(tmp_path, DOCKER_29_0, registry)  # pulled before the exporter started
    hub = DockerHub(HUB)
    exp = _exporter(engine, hub, tmp_path, 0)
    try:
        exp.wait_metrics(lambda m: m.get("docker_exporter_collector_success",
                                         collector="hub") == 1, what="the Hub source")
        time.sleep(3)
        # Neither pull nor build was seen: nothing is taken for pulled from Docker Hub.
        assert hub.requests == {}, hub.requests
        engine.pull(f"{TOOL}:1", registry.address)  # now it is seen (an event)
        exp.wait_metrics(lambda m: m.get("docker_hub_repository_pulls_total",
                                         repository=TOOL) == 1234, what="the pull, seen")
        assert SECRET not in _asked(hub), hub.requests
    finally:
        exp.stop()
    # After a restart the pull seen is remembered (the state store), the build still unknown.
    hub.requests.clear()
    exp = _exporter(engine, hub, tmp_path, 1)
    try:
        exp.wait_metrics(lambda m: m.get("docker_hub_repository_pulls_total",
                                         repository=TOOL) == 1234, what="remembered")
        time.sleep(2)
        assert SECRET not in _asked(hub), hub.requests
    finally:
        exp.stop()
        hub.stop()
        engine.stop()
