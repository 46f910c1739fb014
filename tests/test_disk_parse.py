"""The /system/df arithmetic on recorded answers of both shapes."""

from __future__ import annotations

from exporter.snapshots import KindUsage
from exporter.sources.disk import parse_disk_usage
from exporter.timestamps import parse_timestamp
from tests.test_golden import load


def test_api_1_52_summary_shape_is_used_as_is() -> None:
    disk = parse_disk_usage(load("engine-1.52/system_df.json"))
    assert disk.images == KindUsage(total=4, active=2, size=98765432, reclaimable=12345678)
    assert disk.containers == KindUsage(total=3, active=1, size=6000, reclaimable=5000)
    assert disk.volumes == KindUsage(total=2, active=1, size=230000, reclaimable=30000)
    assert disk.build_cache == KindUsage(total=7, active=0, size=69, reclaimable=62)


def test_api_1_52_compat_answer_is_read_from_its_summaries() -> None:
    """API 1.52 without verbose sends the legacy lists next to the summaries (changelog
    v1.52); the summaries are the daemon's own figures and win. Zero counts are left out."""
    doc = load("engine-1.52/system_df_compat.json")
    disk = parse_disk_usage(doc)
    assert disk.images == KindUsage(total=2, active=1, size=98765432, reclaimable=12345678)
    # The lists alone would say more is reclaimable (SharedSize -1: nothing counted as used).
    lists = parse_disk_usage({k: v for k, v in doc.items() if not k.endswith("Usage")})
    assert lists.images.reclaimable == 98765432
    assert disk.containers == KindUsage(total=1, active=1, size=1000, reclaimable=0)
    assert disk.volumes == KindUsage(total=1, active=1, size=230000, reclaimable=0)
    assert disk.build_cache == KindUsage(0, 0, 0, 0)


def test_api_1_53_summaries_alone() -> None:
    """API 1.53 (spec v1.53 SystemDataUsageResponse): no legacy fields; absent counts are 0."""
    disk = parse_disk_usage(load("engine-1.53/system_df.json"))
    assert disk.images == KindUsage(total=3, active=1, size=98765432, reclaimable=45000000)
    assert disk.containers == KindUsage(total=2, active=0, size=5000, reclaimable=5000)
    assert disk.volumes == KindUsage(total=1, active=0, size=300000, reclaimable=300000)
    assert disk.build_cache == KindUsage(0, 0, 0, 0)


def test_api_1_41_item_shape_is_computed_like_the_cli() -> None:
    doc = load("engine-1.41/system_df.json")
    disk = parse_disk_usage(doc)
    used = [i for i in doc["Images"] if i["Containers"] > 0]
    assert disk.images == KindUsage(
        total=len(doc["Images"]), active=len(used), size=doc["LayersSize"],
        reclaimable=doc["LayersSize"] - sum(i["Size"] - i["SharedSize"] for i in used))
    assert disk.containers.reclaimable == sum(
        c["SizeRw"] for c in doc["Containers"] if c["State"] != "running")
    assert disk.volumes.reclaimable == sum(
        v["UsageData"]["Size"] for v in doc["Volumes"] if v["UsageData"]["RefCount"] == 0)
    assert disk.build_cache.size == sum(b["Size"] for b in doc["BuildCache"] if not b["Shared"])


def test_unknown_sizes_and_junk_do_not_break_the_sums() -> None:
    doc = {"LayersSize": 100, "Images": [{"Containers": 1, "Size": -1, "SharedSize": -1}, "x"],
           "Containers": None, "Volumes": [{"UsageData": {"Size": -1, "RefCount": 0}},
                                           {"UsageData": None}],
           "BuildCache": [{"Size": 10, "InUse": True}, {"Size": 5, "Shared": True}]}
    disk = parse_disk_usage(doc)
    assert disk.images == KindUsage(1, 1, 100, 100)
    assert disk.containers == KindUsage(0, 0, 0, 0)
    assert disk.volumes == KindUsage(2, 0, 0, 0)
    assert disk.build_cache == KindUsage(2, 1, 10, 0)


def _image(image_id: str, tags: list[str] | None, users: int, size: int, shared: int) -> dict:
    return {"Id": image_id, "RepoTags": tags, "Containers": users, "Size": size,
            "SharedSize": shared}


def test_dangling_bytes_are_what_image_prune_frees() -> None:
    """Dangling and used by no container: its unique bytes (Size - SharedSize). Used by a
    stopped container, or tagged: nothing. Podman lists an image once per tag."""
    images = [_image("a", ["<none>:<none>"], 0, 30_000_000, 5_000_000),
              _image("b", None, 0, 7_000_000, 2_000_000),
              _image("c", ["<none>:<none>"], 1, 9_000_000, 2_000_000),
              _image("d", ["app:1"], 0, 25_000_000, 5_000_000),
              _image("e", [], 0, 5_000_000, 5_000_000)]  # an intermediate: all shared
    assert parse_disk_usage({"Images": images}).dangling_unused == 30_000_000
    podman = [_image("p", ["<none>"], 0, 9, 4), _image("q", ["1"], 0, 9, 4),
              _image("q", ["2"], 0, 9, 4)]
    assert parse_disk_usage({"Images": podman}, podman=True).dangling_unused == 5
    assert parse_disk_usage({"Images": []}).dangling_unused == 0
    # Recorded: the one dangling image is a stopped container's (not freed).
    assert parse_disk_usage(load("engine-1.41/system_df.json")).dangling_unused == 0
    assert parse_disk_usage(load("podman-4.3/system_df.json"), podman=True).dangling_unused == 0


def test_dangling_bytes_unknown_without_shared_sizes() -> None:
    """API 1.53 answers with summaries alone; the containerd store's lists have SharedSize
    -1. Not known: absent, not a guess."""
    assert parse_disk_usage(load("engine-1.53/system_df.json")).dangling_unused is None
    assert parse_disk_usage(load("engine-1.52/system_df_compat.json")).dangling_unused is None
    items = {"ImageUsage": {"TotalCount": 1, "Items": [_image("a", [], 0, 10, 4)]}}
    assert parse_disk_usage(items).dangling_unused == 6


def test_engine_timestamps() -> None:
    assert parse_timestamp("2026-11-28T03:53:37.526994678Z") == 1795838017.526994
    assert parse_timestamp("2026-11-28T04:53:37+01:00") == 1795838017.0
    assert parse_timestamp("0001-01-01T00:00:00Z") is None
    assert parse_timestamp("yesterday") is None
    assert parse_timestamp(None) is None
