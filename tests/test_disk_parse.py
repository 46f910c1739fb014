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


def test_engine_timestamps() -> None:
    assert parse_timestamp("2026-11-28T03:53:37.526994678Z") == 1795838017.526994
    assert parse_timestamp("2026-11-28T04:53:37+01:00") == 1795838017.0
    assert parse_timestamp("0001-01-01T00:00:00Z") is None
    assert parse_timestamp("yesterday") is None
    assert parse_timestamp(None) is None
