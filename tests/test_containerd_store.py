"""Docker 25 to 29, containerd image store and classic: the exporter, run as a process, against a
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
from exporter.timestamps import parse_timestamp
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
from tests.registries import copy_manifest, delete_manifest, descriptor, put_index
from tests.services import Dockerd, Metrics, Registry
from tests.test_signatures import SIGN, SLSA, Publisher

SOURCE = "hygiene/c8d-src"
FAST = ("--collector.engine.interval", "1s", "--collector.disk.interval", "1s",
        "--upstream.interval", "1s", "--versions.enabled", "false")
KINDS = {"images": "ImageUsage", "containers": "ContainerUsage", "volumes": "VolumeUsage",
         "build_cache": "BuildCacheUsage"}


BUILDS = ("p1", "r1", "r2", "g1", "s1", "s2", "o1", "o2")


@dataclass
class Sources:
    """Real images in the registry, each with its own content: builds for this host's
    platform (p1 ... s2), and two an index may call any other platform (o1, o2; nothing here
    runs them)."""

    registry: Registry
    arch: str
    other: str

    def repository(self, name: str) -> str:
        """A fresh repository holding them all as src-p1 ... src-o2."""
        for tag in BUILDS:
            copy_manifest(self.registry.address, f"{SOURCE}:{tag}", name, f"src-{tag}")
        return name


@pytest.fixture(scope="module")
def sources(dockerd: Dockerd, registry: Registry) -> Sources:
    for tag in BUILDS:
        ref = f"{registry.address}/{SOURCE}:{tag}"
        dockerd.build(ref, "FROM hygiene-base:1\nCOPY v /v\n", {"v": f"containerd {tag}"})
        dockerd.cli("push", ref)
    arch = dockerd.arch()
    return Sources(registry, arch, "arm64" if arch != "arm64" else "amd64")


@pytest.fixture
def standin(tmp_path: Path) -> Iterator:
    started: list[StandinEngine] = []

    def make(version: EngineVersion, arch: str = "amd64",
             containerd: bool = True) -> StandinEngine:
        engine = StandinEngine(tmp_path / f"engine-{len(started)}.sock", version, arch,
                               containerd)
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
def test_containerd_store(version: EngineVersion, sources: Sources, registry: Registry,
                          standin, exporter_factory) -> None:
    scenario(version, True, sources, registry, standin, exporter_factory)


@pytest.mark.parametrize("version", [DOCKER_25_0, DOCKER_29_0, DOCKER_29_2],
                         ids=lambda v: f"{v.release}-api{v.api}")
def test_classic_store(version: EngineVersion, sources: Sources, registry: Registry,
                       standin, exporter_factory) -> None:
    """Docker 25-29 hosts upgraded in place keep the graph-driver store: image IDs are
    config digests, a re-pulled image keeps its RepoDigests, nothing says which manifest."""
    scenario(version, False, sources, registry, standin, exporter_factory)


def scenario(version: EngineVersion, containerd: bool, sources: Sources, registry: Registry,
             standin, exporter_factory) -> None:
    """Four tags, four containers; then upstream rebuilds another platform (plat) and this
    platform (rebuilt), and this host pulls an index that only gained a platform (gained)
    and one whose platform was rebuilt (stale)."""
    addr = registry.address
    store = "c8d" if containerd else "classic"
    repo = sources.repository(f"hygiene/{store}-{version.api.replace('.', '')}")

    def index(tag: str, *builds: str) -> str:
        """An index of src-<build>s: o-builds for another platform (or the one after @),
        the others for this host's."""
        entries = []
        for build in builds:
            name, _, arch = build.partition("@")
            entries.append((f"src-{name}", arch or (
                sources.other if name.startswith("o") else sources.arch)))
        return put_index(addr, repo, tag, entries)

    # Four images, each with its own content for this platform.
    old = {"plat": index("plat", "p1", "o1"),
           "rebuilt": index("rebuilt", "r1", "o1@ppc64le"),
           "gained": index("gained", "g1"),
           "stale": index("stale", "s1", "o1@riscv64")}
    tags = tuple(old)

    engine = standin(version, sources.arch, containerd)
    engine.volumes = [("data", 300_000, 1), ("old", 200_000, 0)]
    engine.build_cache = [("cache1", 1000, False), ("cache2", 500, False)]

    def ref(tag: str) -> str:
        return f"{addr}/{repo}:{tag}"

    first = {tag: engine.pull(ref(tag), addr) for tag in tags}
    for tag in tags:
        engine.run(f"{store}-{tag}", ref(tag))
    exp = exporter_factory("--docker.host", engine.host, *FAST,
                           "--upstream.include", f"^{addr}/{repo}:")
    m = exp.wait_metrics(lambda m: all(status(m, ref(t)) == "current" for t in tags),
                         what="every tag current")
    assert m.get("docker_up") == 1
    for tag in tags:
        assert m.get("docker_container_image_stale", container=f"{store}-{tag}") == 0
        assert m.get("docker_container_upstream_drift", container=f"{store}-{tag}") == 0
        # The digest is the index the registry serves; on the containerd store, so is the ID.
        assert m.get("docker_image_info", image=ref(tag), id=first[tag], digest=old[tag]) == 1
        assert (first[tag] == old[tag]) is containerd

    index("plat", "p1", "o2")
    has_manifests = containerd and api_key(version.api) >= api_key("1.47")
    if has_manifests or not containerd:
        # The index this host pulled is gone: only the host's own platform manifest (or,
        # on the classic store, the config digest) can tell nothing changed here.
        delete_manifest(addr, repo, old["plat"])
    index("rebuilt", "r2", "o1@ppc64le")
    index("gained", "g1", "o1@s390x")
    index("stale", "s2", "o1@riscv64")
    repulled = {tag: engine.pull(ref(tag), addr) for tag in ("gained", "stale")}
    assert repulled["stale"] != first["stale"]
    assert (repulled["gained"] != first["gained"]) is containerd

    def settled(m: Metrics) -> bool:
        # gained and stale went platform_unchanged / drifted for a moment if a check ran
        # between the push and the pull here.
        return (status(m, ref("plat")) == "platform_unchanged"
                and status(m, ref("rebuilt")) == "drifted"
                and status(m, ref("gained")) == status(m, ref("stale")) == "current"
                and m.get("docker_container_image_stale", container=f"{store}-stale") == 1
                and m.get("docker_image_pulls_total", repository=f"{addr}/{repo}") == 2
                and m.select("docker_image_info", image=ref("stale"), id=repulled["stale"])
                != [])
    m = exp.wait_metrics(settled, what="drift and staleness decided", timeout=40)
    # Image times: LastTagTime from inspect (the pull here), Created from the config.
    pulled_at = engine.tagged_at[repulled["stale"]]
    assert m.get("docker_image_last_tagged_timestamp_seconds", id=repulled["stale"]) == \
        pytest.approx(pulled_at, abs=1e-3)
    listed = {i["Id"]: i for i in engine.image_summaries(version.api, False)}
    assert m.get("docker_image_created_timestamp_seconds", id=repulled["stale"]) == \
        listed[repulled["stale"]]["Created"] > 0
    assert m.get("docker_image_containers", id=first["plat"]) == 1
    assert m.get("docker_image_upstream_drift", image=ref("plat")) == 0
    assert m.get("docker_image_upstream_drift", image=ref("rebuilt")) == 1

    def container(tag: str) -> tuple[float | None, float | None]:
        return (m.get("docker_container_image_stale", container=f"{store}-{tag}"),
                m.get("docker_container_upstream_drift", container=f"{store}-{tag}"))

    assert container("plat") == (0, 0)
    assert container("rebuilt") == (0, 1)
    assert container("stale") == (1, 1)
    # The index only gained a platform: neither stale nor drifted where the engine says
    # which manifest the container runs (containerd store, API 1.47+) or the image ID is
    # the config digest (classic). Before 1.47 on containerd, image IDs are all there is.
    assert container("gained") == ((0, 0) if has_manifests or not containerd else (1, 1))
    # The container's label stays the tag although the engine lists it by image ID now.
    assert m.get("docker_container_info", container=f"{store}-stale", image=ref("stale"),
                 image_id=first["stale"]) == 1
    # The replaced image: untagged. containerd: without RepoDigests, kept from Docker 27.2
    # on; classic: kept, with its RepoDigest.
    kept = {"id": first["stale"], "image": "<none>", "repository": "<none>", "tag": "<none>",
            "digest": ""}
    if not containerd:
        kept.update(repository=f"{addr}/{repo}", digest=old["stale"])
    assert m.select("docker_image_info", id=first["stale"]) == (
        [(kept, 1.0)] if version.keeps_dangling or not containerd else [])

    # Disk figures: the 1.52+ summaries as the engine gives them (absent counts are 0);
    # before, computed from the lists, where the counts are the same.
    usage = engine.usage()
    m = exp.wait_metrics(lambda m: all(
        m.get("docker_disk_objects", kind=kind) == usage[key]["TotalCount"]
        and m.get("docker_disk_active_objects", kind=kind) == usage[key]["ActiveCount"]
        for kind, key in KINDS.items()), what="disk figures after the pulls")
    if api_key(version.api) >= api_key("1.52"):
        for kind, key in KINDS.items():
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
    put_index(registry.address, repo, "latest", [("src-p1", sources.arch)])
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
    for tag, source in (("a", "src-p1"), ("b", "src-r1")):
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


@pytest.mark.parametrize("version, containerd", [(DOCKER_25_0, True), (DOCKER_29_2, True),
                                                 (DOCKER_29_2, False)],
                         ids=["25.0-api1.44-c8d", "29.2-api1.53-c8d", "29.2-api1.53-classic"])
def test_newer_versions_and_signatures(version: EngineVersion, containerd: bool,
                                       sources: Sources, registry: Registry, dockerd: Dockerd,
                                       standin, exporter_factory, tmp_path: Path) -> None:
    """Newer versions and signatures ask the registry; the engine gives the tag, its
    RepoDigest and the platform. On the containerd store the image ID is the index digest,
    the digest a signature names; a newer version counts only with an image for this host's
    platform."""
    addr = registry.address
    store = "c8d" if containerd else "classic"
    repo = sources.repository(f"hygiene/ver-{store}-{version.api.replace('.', '')}")
    other = sources.other
    put_index(addr, repo, "1.0.0", [("src-p1", sources.arch), ("src-o1", other)])
    put_index(addr, repo, "1.1.0", [("src-r1", sources.arch), ("src-o1", other)])
    put_index(addr, repo, "1.2.0", [("src-g1", sources.arch)])
    put_index(addr, repo, "2.0.0", [("src-o2", other)])  # nothing for this platform
    publisher = Publisher(addr, repo, tmp_path / "oras")
    signed = descriptor(addr, repo, "1.0.0")
    assert signed["mediaType"].endswith("manifest.list.v2+json")
    publisher.bundle(signed, SIGN)  # cosign 3, the referrers tag schema (Distribution 2.8)
    publisher.bundle(descriptor(addr, repo, "1.1.0"), SLSA)  # an attestation only

    engine = standin(version, sources.arch, containerd)

    def ref(tag: str) -> str:
        return f"{addr}/{repo}:{tag}"

    ids = {tag: engine.pull(ref(tag), addr) for tag in ("1.0.0", "1.1.0", "1.2.0")}
    assert (ids["1.0.0"] == signed["digest"]) is containerd
    engine.run(f"ver-{store}", ref("1.0.0"))
    # pin none: 2.0.0 is left out for its platform, not for its major version.
    exp = exporter_factory("--docker.host", engine.host, "--collector.engine.interval", "1s",
                           "--upstream.interval", "1s", "--state.path",
                           str(tmp_path / "state.db"), "--upstream.include", f"^{addr}/{repo}:",
                           "--versions.pin", "none")
    tags = ("1.0.0", "1.1.0", "1.2.0")
    m = exp.wait_metrics(lambda m: all(
        m.get("docker_image_versions_behind", image=ref(t)) is not None
        and m.get("docker_image_upstream_signed", image=ref(t)) is not None for t in tags),
        what="versions and signatures of every tag")
    assert [status(m, ref(t)) for t in tags] == ["current"] * 3
    # 1.1.0 and 1.2.0 are newer for this platform; 2.0.0 has no image for it.
    assert m.select("docker_image_newer_version_info", image=ref("1.0.0")) == [
        ({"image": ref("1.0.0"), "current": "1.0.0", "latest": "1.2.0"}, 1.0)]
    assert [m.get("docker_image_versions_behind", image=ref(t)) for t in tags] == [2, 1, 0]
    assert m.select("docker_image_newer_version_info", image=ref("1.2.0")) == []
    # Since the earliest newer build for this platform: 1.1.0's (src-r1), built by dockerd.
    built = dockerd.cli("image", "inspect", "-f", "{{.Created}}", f"{addr}/{SOURCE}:r1").strip()
    assert m.get("docker_image_newer_version_created_timestamp_seconds", image=ref("1.0.0")) \
        == pytest.approx(parse_timestamp(built), abs=1e-3)
    assert m.get("docker_container_newer_version_available", container=f"ver-{store}",
                 image=ref("1.0.0")) == 1
    # The signature names the index digest the tag serves; an attestation is no signature.
    assert [m.get("docker_image_upstream_signed", image=ref(t)) for t in tags] == [1, 0, 0]
    assert spoken(engine)[:2] == ({"GET"}, {version.api})
