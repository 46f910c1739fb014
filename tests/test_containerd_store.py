"""Docker 25 to 29 with the containerd image store: the exporter, run as a process, against a
stand-in engine (tests/engine_standin.py; no such engine runs here) whose images are real
indexes and manifests in the real test registry.

On that store an image ID is the digest of the index a tag named when pulled, a re-pulled
tag leaves the old image without tags or RepoDigests (or drops it, before Docker 27.2), and
only API 1.47+ (Manifests) and 1.48+ (ImageManifestDescriptor) say which platform manifest
the host has and a container runs.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from exporter.sources.engine import Engine, api_key
from exporter.sources.inventory import EngineReader
from tests.engine_standin import (
    DOCKER_25_0,
    DOCKER_27_5,
    DOCKER_28_0,
    DOCKER_29_0,
    DOCKER_29_2,
    DOCKER_29_3,
    FUTURE,
    EngineVersion,
    StandinEngine,
)
from tests.registries import copy_manifest, delete_manifest, put_index
from tests.services import Dockerd, Metrics, Registry

SOURCE = "hygiene/c8d-src"
FAST = ("--collector.engine.interval", "1s", "--collector.disk.interval", "1s",
        "--upstream.interval", "1s", "--versions.enabled", "false")
KINDS = {"images": "ImageUsage", "containers": "ContainerUsage", "volumes": "VolumeUsage",
         "build_cache": "BuildCacheUsage"}


@dataclass
class Sources:
    """Four real images in the registry: two builds for this host's platform (h1, h2), two
    for another (o1, o2; an index may call them anything: nothing here runs them)."""

    registry: Registry
    arch: str
    other: str

    def repository(self, name: str) -> str:
        """A fresh repository holding the four as src-h1 ... src-o2."""
        for tag in ("h1", "h2", "o1", "o2"):
            copy_manifest(self.registry.address, f"{SOURCE}:{tag}", name, f"src-{tag}")
        return name


@pytest.fixture(scope="module")
def sources(dockerd: Dockerd, registry: Registry) -> Sources:
    for tag in ("h1", "h2", "o1", "o2"):
        ref = f"{registry.address}/{SOURCE}:{tag}"
        dockerd.build(ref, "FROM hygiene-base:1\nCOPY v /v\n", {"v": f"containerd {tag}"})
        dockerd.cli("push", ref)
    arch = dockerd.arch()
    return Sources(registry, arch, "arm64" if arch != "arm64" else "amd64")


@pytest.fixture
def standin(tmp_path: Path) -> Iterator:
    started: list[StandinEngine] = []

    def make(version: EngineVersion, arch: str = "amd64") -> StandinEngine:
        engine = StandinEngine(tmp_path / f"engine-{len(started)}.sock", version, arch)
        started.append(engine)
        return engine

    yield make
    for engine in started:
        engine.stop()


def status(m: Metrics, image: str) -> str | None:
    found = [lb["status"] + (f":{lb['reason']}" if lb["reason"] else "")
             for lb, v in m.select("docker_image_upstream_status", image=image) if v == 1]
    return found[0] if found else None


def spoken(engine: StandinEngine) -> tuple[set[str], set[str], set[str]]:
    """(methods, API versions in path prefixes, un-prefixed paths) the exporter sent."""
    methods, versions, bare = set(), set(), set()
    for method, path in list(engine.requests):
        methods.add(method)
        if path.startswith("/v1."):
            versions.add(path.split("/")[1][1:])
        else:
            bare.add(path.partition("?")[0])
    return methods, versions, bare


ENGINES = [DOCKER_25_0, DOCKER_27_5, DOCKER_28_0, DOCKER_29_0, DOCKER_29_2]


@pytest.mark.parametrize("version", ENGINES, ids=lambda v: f"{v.release}-api{v.api}")
def test_drift_and_staleness(version: EngineVersion, sources: Sources, registry: Registry,
                             standin, exporter_factory) -> None:
    addr = registry.address
    repo = sources.repository(f"hygiene/c8d-{version.api.replace('.', '')}")
    h1, h2 = ("src-h1", sources.arch), ("src-h2", sources.arch)

    def index(tag: str, *entries: tuple[str, str]) -> str:
        return put_index(addr, repo, tag, list(entries))

    # Four tags, four indexes (all different, so each is its own image here).
    old_plat = index("plat", h1, ("src-o1", sources.other))
    index("rebuilt", h1, ("src-o1", "ppc64le"))
    index("gained", h1)
    index("stale", h1, ("src-o1", "riscv64"))
    tags = ("plat", "rebuilt", "gained", "stale")

    engine = standin(version, sources.arch)
    engine.volumes = [("data", 300_000, 1), ("old", 200_000, 0)]
    engine.build_cache = [("cache1", 1000, False), ("cache2", 500, False)]

    def ref(tag: str) -> str:
        return f"{addr}/{repo}:{tag}"

    first = {tag: engine.pull(ref(tag), addr) for tag in tags}
    for tag in tags:
        engine.run(f"c8d-{tag}", ref(tag))
    exp = exporter_factory("--docker.host", engine.host, *FAST,
                           "--upstream.include", f"^{addr}/{repo}:")
    m = exp.wait_metrics(lambda m: all(status(m, ref(t)) == "current" for t in tags),
                         what="every tag current")
    assert m.get("docker_up") == 1
    for tag in tags:
        assert m.get("docker_container_image_stale", container=f"c8d-{tag}") == 0
        assert m.get("docker_container_upstream_drift", container=f"c8d-{tag}") == 0
        # The image ID is the index digest the registry serves, and so is the digest.
        assert m.get("docker_image_info", image=ref(tag), id=first[tag],
                     digest=first[tag]) == 1

    # Upstream: another platform rebuilt (plat), this platform rebuilt (rebuilt). And
    # pulled here: an index that only gained a platform (gained), a rebuilt one (stale).
    index("plat", h1, ("src-o2", sources.other))
    has_manifests = api_key(version.api) >= api_key("1.47")
    if has_manifests:
        # The index this host pulled is gone: only the host's own platform manifest can
        # tell that nothing changed for this platform.
        delete_manifest(addr, repo, old_plat)
    index("rebuilt", h2, ("src-o1", "ppc64le"))
    index("gained", h1, ("src-o1", "s390x"))
    index("stale", h2, ("src-o1", "riscv64"))
    repulled = {tag: engine.pull(ref(tag), addr) for tag in ("gained", "stale")}
    assert repulled["gained"] != first["gained"] and repulled["stale"] != first["stale"]

    def settled(m: Metrics) -> bool:
        # gained and stale went platform_unchanged / drifted for a moment if a check ran
        # between the push and the pull here.
        return (status(m, ref("plat")) == "platform_unchanged"
                and status(m, ref("rebuilt")) == "drifted"
                and status(m, ref("gained")) == status(m, ref("stale")) == "current"
                and m.get("docker_container_image_stale", container="c8d-stale") == 1
                and m.get("docker_image_pulls_total", repository=f"{addr}/{repo}") == 2
                and m.select("docker_image_info", image=ref("gained"), id=repulled["gained"])
                != [])
    m = exp.wait_metrics(settled, what="drift and staleness decided", timeout=40)
    assert m.get("docker_image_upstream_drift", image=ref("plat")) == 0
    assert m.get("docker_image_upstream_drift", image=ref("rebuilt")) == 1

    def container(tag: str) -> tuple[float | None, float | None]:
        return (m.get("docker_container_image_stale", container=f"c8d-{tag}"),
                m.get("docker_container_upstream_drift", container=f"c8d-{tag}"))

    assert container("plat") == (0, 0)
    assert container("rebuilt") == (0, 1)
    assert container("stale") == (1, 1)
    # The index only gained a platform: neither stale nor drifted, where the engine says
    # which manifest the container runs (API 1.47+). Before, image IDs are all there is.
    assert container("gained") == ((0, 0) if has_manifests else (1, 1))
    # The container's label stays the tag although the engine lists it by image ID now.
    assert m.get("docker_container_info", container="c8d-stale", image=ref("stale"),
                 image_id=first["stale"]) == 1
    # The replaced images: untagged, without RepoDigests, kept from Docker 27.2 on.
    for tag in ("gained", "stale"):
        old = m.select("docker_image_info", id=first[tag])
        assert old == ([({"id": first[tag], "image": "<none>", "repository": "<none>",
                          "tag": "<none>", "digest": ""}, 1.0)]
                       if version.keeps_dangling else []), old

    # Disk figures: the 1.52+ summaries as the engine gives them (absent counts are 0);
    # before, computed from the lists, where the counts are the same.
    usage = engine.usage()
    m = exp.wait_metrics(lambda m: m.get("docker_disk_objects", kind="images")
                         == usage["ImageUsage"]["TotalCount"], what="disk figures")
    for kind, key in KINDS.items():
        assert m.get("docker_disk_objects", kind=kind) == usage[key]["TotalCount"], kind
        assert m.get("docker_disk_active_objects", kind=kind) == usage[key]["ActiveCount"]
        if api_key(version.api) >= api_key("1.52"):
            assert m.get("docker_disk_usage_bytes", kind=kind) == usage[key]["TotalSize"]
            assert m.get("docker_disk_reclaimable_bytes", kind=kind) == \
                usage[key]["Reclaimable"]
    assert usage["BuildCacheUsage"]["ActiveCount"] == 0  # so the answer leaves it out

    methods, versions, bare = spoken(engine)
    assert methods == {"GET"}
    assert versions == {version.api}, versions
    assert bare == {"/version"}, bare


def test_newer_daemon_is_spoken_to_in_the_newest_version_known(
        sources: Sources, registry: Registry, standin, exporter_factory) -> None:
    engine = standin(DOCKER_29_3, sources.arch)  # API 1.40 to 1.54
    repo = sources.repository("hygiene/c8d-154")
    put_index(registry.address, repo, "latest", [("src-h1", sources.arch)])
    ref = f"{registry.address}/{repo}:latest"
    engine.pull(ref, registry.address)
    engine.run("c8d-newer", ref)
    exp = exporter_factory("--docker.host", engine.host, *FAST,
                           "--upstream.include", f"^{registry.address}/{repo}:")
    m = exp.wait_metrics(lambda m: status(m, ref) == "current", what="current")
    assert m.get("docker_up") == 1
    assert m.get("docker_container_image_stale", container="c8d-newer") == 0
    assert spoken(engine)[1] == {"1.53"}


def test_daemon_whose_minimum_is_above_every_known_version(standin, exporter_factory) -> None:
    engine = standin(FUTURE)  # API 1.54 to 1.60
    exp = exporter_factory("--docker.host", engine.host, *FAST, "--upstream.mode", "off",
                           "--events.enabled", "false")
    m = exp.wait_metrics(lambda m: m.get("docker_exporter_collector_success",
                                         collector="engine") == 0, what="a failed read")
    assert m.get("docker_up") == 0
    assert "the Docker daemon accepts API 1.54 to 1.60; this exporter speaks API 1.24 to " \
           "1.53" in exp.log()
    # Nothing but the unversioned /version was asked: no string of 400s.
    methods, versions, bare = spoken(engine)
    assert (methods, versions, bare) == ({"GET"}, set(), {"/version"})


def _raw_get(sock: Path, path: str) -> tuple[int, dict[str, str], bytes]:
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(sock))
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


def test_the_standin_refuses_versions_like_dockerd_29(standin) -> None:
    """What the exporter is up against: an old client gets 400 from Docker 29 on every path
    (daemon/server/middleware/version.go), and the SDK's former "auto" is no protection."""
    engine = standin(DOCKER_29_0)
    code, headers, body = _raw_get(engine.socket_path, "/v1.41/images/json")
    assert code == 400 and headers["Api-Version"] == "1.52"
    assert json.loads(body) == {"message": "client version 1.41 is too old. Minimum supported "
                                "API version is 1.44, please upgrade your client to a newer "
                                "version"}
    code, _, body = _raw_get(engine.socket_path, "/v1.53/version")
    assert code == 400 and json.loads(body)["message"] == \
        "client version 1.53 is too new. Maximum supported API version is 1.52"
    code, _, body = _raw_get(engine.socket_path, "/version")
    assert code == 200 and json.loads(body)["MinAPIVersion"] == "1.44"
    # The exporter's client reads it at 1.52.
    client = Engine(engine.host, 5.0)
    try:
        assert client.images() == [] and client.api_version == "1.52"
        assert client.platform == "linux/amd64"
    finally:
        client.close()


def test_a_failed_image_inspect_costs_only_that_images_last_tag_time(
        sources: Sources, registry: Registry, standin) -> None:
    engine = standin(DOCKER_28_0, sources.arch)
    repo = sources.repository("hygiene/c8d-inspect")
    refs = {}
    for tag, source in (("a", "src-h1"), ("b", "src-h2")):
        put_index(registry.address, repo, tag, [(source, sources.arch)])
        refs[tag] = engine.pull(f"{registry.address}/{repo}:{tag}", registry.address)
    engine.fail_inspect = {refs["a"]}
    reader = EngineReader(Engine(engine.host, 5.0))
    try:
        snap = reader.read()
        times = {i.id: i.last_tagged for i in snap.images}
        assert times[refs["a"]] is None and times[refs["b"]] is not None
        # The image's platform manifest is known: the index's entry for this host.
        by_id = {i.id: i for i in snap.images}
        assert by_id[refs["b"]].platform_manifest == by_id[refs["b"]].manifests[0].digest
        engine.fail_inspect = set()
        before = len(engine.requests)
        snap = reader.read()
        assert all(i.last_tagged is not None for i in snap.images)
        inspected = [p for _, p in engine.requests[before:] if "/images/sha256" in p]
        assert inspected == [f"/v1.48/images/{refs['a']}/json"]  # b's time was kept
    finally:
        reader.engine.close()
