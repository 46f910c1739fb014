"""Podman 4.3's recorded answers (tests/fixtures/podman-4.3, from notes/podman.md): how the
engine is recognised, disk figures as ``podman system df`` prints them, and ``localhost/``
names read as the local builds they are."""

from __future__ import annotations

from exporter.decisions.provenance import PODMAN
from exporter.report import human_size
from exporter.snapshots import KindUsage
from exporter.sources.disk import parse_disk_usage
from exporter.sources.engine import is_podman
from exporter.sources.inventory import build_engine_snapshot
from exporter.sources.upstream import local_digests, targets
from tests.test_golden import load


def test_podman_is_recognised_by_its_version_answer() -> None:
    assert is_podman(load("podman-4.3/version.json"))
    assert not is_podman(load("engine-1.41/version.json"))
    assert not is_podman({"Components": None})
    assert not is_podman([])


def test_disk_figures_are_podman_system_df() -> None:
    # What `podman system df` printed for this answer (02d in the notes):
    #   Images         5   4   11.25MB   2.491MB (22%)
    #   Containers     3   1   170kB     70.01kB (41%)
    #   Local Volumes  3   3   280kB     30kB (11%)
    doc = load("podman-4.3/system_df.json")
    disk = parse_disk_usage(doc, podman=True)
    assert disk.images == KindUsage(total=5, active=4, size=11247025, reclaimable=2490587)
    assert (human_size(disk.images.size), human_size(disk.images.reclaimable)) == (
        "11.25MB", "2.491MB")
    assert disk.containers == KindUsage(total=3, active=1, size=170024, reclaimable=70012)
    assert (human_size(disk.containers.size), human_size(disk.containers.reclaimable)) == (
        "170kB", "70.01kB")
    # The CLI's ACTIVE 3 is the number of users (RefCount 2 + 1); two volumes are in use.
    assert disk.volumes == KindUsage(total=3, active=2, size=280000, reclaimable=30000)
    assert disk.build_cache is None
    assert set(disk.by_kind()) == {"images", "containers", "volumes"}
    # Docker's arithmetic on the same answer would say the images take no space at all.
    assert parse_disk_usage(doc).images.size == 0


def test_podman_5_answer_uses_its_deduplicated_total() -> None:
    # Podman 5 sends the deduplicated total as LayersSize, and its CLI subtracts what each
    # in-use image ID holds alone (Size - SharedSize), once per ID though listed per tag.
    doc = {"LayersSize": 5000, "Images": [
        {"Id": "a", "RepoTags": ["1"], "Size": 3000, "SharedSize": 1000, "Containers": 1},
        {"Id": "a", "RepoTags": ["2"], "Size": 3000, "SharedSize": 1000, "Containers": 1},
        {"Id": "b", "RepoTags": ["1"], "Size": 2000, "SharedSize": 1000, "Containers": 0}],
        "Containers": [{"State": "paused", "SizeRw": 7}], "Volumes": []}
    disk = parse_disk_usage(doc, podman=True)
    assert disk.images == KindUsage(total=3, active=1, size=5000, reclaimable=3000)
    assert disk.containers == KindUsage(total=1, active=0, size=7, reclaimable=7)


def test_localhost_names_have_no_registry_digest() -> None:
    images = load("podman-4.3/images_json.json")
    containers = load("podman-4.3/containers_json.json")
    snap = build_engine_snapshot(images, containers, {}, {}, "1.41", store=PODMAN)
    by_tag = {t: i for i in snap.images for t in i.tags}
    # Podman gave localhost/app2:1 a RepoDigest of a manifest it made itself.
    assert any(d.startswith("localhost/app2@") for i in images for d in i["RepoDigests"])
    assert by_tag["localhost/app2:1"].repo_digests == ()
    assert by_tag["localhost/app3:1"].repo_digests == ()
    pulled = by_tag["127.0.0.1:60141/app:1"]
    assert local_digests(pulled, "127.0.0.1:60141/app") == {
        "sha256:44320557f05bb5f5f230f8bf5a63b46f836cb67a2bdf5ced7e3622da89c25ceb"}
    # Both the index and the platform manifest digest of a multi-arch pull are kept.
    assert len(by_tag["127.0.0.1:60141/multi:latest"].repo_digests) == 2
    # Drift asks nothing about them (no_repo_digest), nor do versions (no local digests).
    assert {t.image: bool(t.local_digests) for t in targets(snap, [], [])} == {
        "localhost/app2:1": False, "localhost/app3:1": False,
        "127.0.0.1:60141/app:1": True, "127.0.0.1:60141/multi:latest": True}
    # The container still runs the image the tag named before the re-pull: stale.
    stale = {c.name: c.stale for c in snap.containers}
    assert stale == {"stale": True, "c1": False}
    # On Docker, localhost/ is a registry's name like any other: its digests are kept.
    docker = build_engine_snapshot(images, containers, {}, {}, "1.41")
    assert {t for i in docker.images for t in i.repo_digests if t.startswith("localhost/")}


def test_fully_qualified_podman_names_are_shown_short() -> None:
    images = [{"Id": "sha256:" + "1" * 64,
               "RepoTags": ["docker.io/library/busybox:1.36"],
               "RepoDigests": ["docker.io/library/busybox@sha256:" + "2" * 64]}]
    containers = [{"Id": "c" * 64, "Names": ["/web"], "Image": "docker.io/library/busybox:1.36",
                   "ImageID": "sha256:" + "1" * 64, "State": "running"}]
    snap = build_engine_snapshot(images, containers, {}, {}, "1.41", store=PODMAN)
    assert snap.images[0].tags == ("busybox:1.36",)
    assert snap.images[0].digest_for("busybox") == "sha256:" + "2" * 64
    assert snap.containers[0].image == "busybox:1.36"
