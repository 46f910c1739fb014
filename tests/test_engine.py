"""The exporter against a real dockerd and a real Podman service: disk figures, images,
containers, as each engine's own CLI shows them."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from exporter.report import human_size
from tests.proxy import EngineProxy
from tests.services import EVERY_ENGINE, Dockerd, Metrics, Podman, wait_for

KINDS = {"Images": "images", "Containers": "containers", "Local Volumes": "volumes",
         "Build Cache": "build_cache"}
FAST = ("--collector.engine.interval", "1s", "--collector.disk.interval", "1s")


@pytest.fixture(scope="module")
def populated(engine: Dockerd | Podman) -> Dockerd | Podman:
    """Every kind of object system df counts, in used and unused variants."""
    d = engine
    d.build("hygiene-app:1", "FROM hygiene-base:1\nCOPY a /a\n", {"a": "one" * 5000})
    d.build("hygiene-app:2", "FROM hygiene-base:1\nCOPY a /a\n", {"a": "two" * 7000})
    d.cli("tag", "hygiene-app:2", "hygiene-app:latest")
    d.build("hygiene-dangle:1", "FROM hygiene-base:1\nCOPY a /a\n", {"a": "first" * 100})
    d.build("hygiene-dangle:1", "FROM hygiene-base:1\nCOPY a /a\n", {"a": "second" * 100})
    d.build("hygiene-run:1", 'FROM hygiene-base:1\nRUN ["/bin/busybox", "sh", "-c", '
            '"head -c 40000 /dev/zero > /z"]\n')
    run = d.RUN
    d.cli("volume", "create", "hygiene-unused")
    d.cli("run", "--rm", *run, "-v", "hygiene-unused:/v", "hygiene-base:1",
          "/bin/busybox", "sh", "-c", "head -c 300000 /dev/zero > /v/f")
    d.cli("run", "--rm", *run, "-v", "hygiene-used:/v", "hygiene-base:1",
          "/bin/busybox", "sh", "-c", "head -c 200000 /dev/zero > /v/f")
    d.cli("run", "-d", "--name", "hygiene-running", *run, "-v", "hygiene-used:/v",
          "hygiene-app:1", "/bin/busybox", "sleep", "3600")
    d.cli("exec", "hygiene-running", "/bin/busybox", "sh", "-c", "head -c 1000 /dev/zero > /rw")
    d.cli("run", "--name", "hygiene-stopped", *run, "hygiene-app:2",
          "/bin/busybox", "sh", "-c", "head -c 5000 /dev/zero > /rw")
    # A second user of hygiene-used: still one volume in use (Podman's CLI says 2, see below).
    d.cli("create", "--name", "hygiene-created", *run, "-v", "hygiene-used:/v",
          _long_name(d, "hygiene-base:1"), "/bin/busybox", "true")
    return d


def _long_name(d: Dockerd | Podman, tag: str) -> str:
    """The image's fully qualified name, so that labels can be seen to use the short form."""
    return d.local(tag) if isinstance(d, Podman) else f"docker.io/library/{tag}"


def _ready_exporter(exporter_factory, host: str, *extra: str):
    exp = exporter_factory("--docker.host", host, *FAST, *extra)
    exp.wait_metrics(lambda m: m.get("docker_exporter_collector_success", collector="disk") == 1
                     and m.get("docker_up") == 1, what="both collectors to succeed")
    return exp


def _cli_df(d: Dockerd | Podman, cli=None) -> dict[str, dict[str, int | str]]:
    """``system df`` as the engine's CLI prints it, per kind: total, active, size, reclaimable.
    Docker's prints sizes in rounded units; Podman's JSON has the bytes."""
    rows = map(json.loads, (cli or d.cli)("system", "df", "--format", "{{json .}}").splitlines())
    if isinstance(d, Podman):
        return {KINDS[r["Type"]]: {"total": r["Total"], "active": r["Active"], "size": r["Size"],
                                   "reclaimable": r["Reclaimable"]} for r in rows}
    return {KINDS[r["Type"]]: {"total": int(r["TotalCount"]), "active": int(r["Active"]),
                               "size": r["Size"], "reclaimable": r["Reclaimable"].split(" ")[0]}
            for r in rows}


def _assert_matches_df(metrics: Metrics, rows: dict[str, dict[str, int | str]],
                       cli_name: str) -> None:
    # Podman has no build cache: no row, and no series rather than a 0.
    assert set(rows) == {lb["kind"] for lb, _ in metrics.select("docker_disk_usage_bytes")}
    for kind, row in rows.items():
        usage = metrics.get("docker_disk_usage_bytes", kind=kind)
        reclaimable = metrics.get("docker_disk_reclaimable_bytes", kind=kind)
        shown = human_size if isinstance(row["size"], str) else int
        assert metrics.get("docker_disk_objects", kind=kind) == row["total"], (cli_name, kind)
        if not (cli_name.startswith("podman") and kind == "volumes"):
            assert metrics.get("docker_disk_active_objects", kind=kind) == row["active"], (
                cli_name, kind)
        assert shown(usage) == row["size"], (cli_name, kind, usage, row)
        assert shown(reclaimable) == row["reclaimable"], (cli_name, kind, reclaimable, row)


@EVERY_ENGINE
def test_disk_figures_equal_system_df(populated: Dockerd | Podman, exporter_factory) -> None:
    exp = _ready_exporter(exporter_factory, populated.host)
    rows = _cli_df(populated)
    # Every kind is present and non-trivial, so the comparison means something.
    podman = isinstance(populated, Podman)
    assert set(rows) == set(KINDS.values()) - ({"build_cache"} if podman else set())
    for kind in rows:
        assert rows[kind]["total"] > 0, (kind, rows)
    assert 0 < rows["images"]["active"] < rows["images"]["total"]
    metrics = exp.wait_metrics(
        lambda m: m.get("docker_disk_objects", kind="containers") == 3, what="3 containers")
    _assert_matches_df(metrics, rows, populated.name)
    # One volume is in use, by two containers: Docker's CLI counts the volume, Podman's CLI
    # its users; the exporter counts volumes on both.
    assert metrics.get("docker_disk_active_objects", kind="volumes") == 1
    assert rows["volumes"]["active"] == (2 if podman else 1)
    assert metrics.get("docker_disk_reclaimable_bytes", kind="volumes") >= 300000
    assert metrics.get("docker_disk_reclaimable_bytes", kind="containers") >= 5000
    if podman:
        # Podman 4's figure adds up every image's Size, so the base layer that the others
        # share is counted once per image (Docker counts each layer once).
        base = int(populated.cli("image", "inspect", "-f", "{{.Size}}", "hygiene-base:1"))
        assert metrics.get("docker_disk_usage_bytes", kind="images") > 4 * base
        return
    # The newer CLI (if this machine has one) computes the same figures the same way.
    newer = shutil.which("docker", path="/usr/local/bin")
    if newer:
        out = subprocess.run([newer, "system", "df", "--format", "{{json .}}"], check=True,
                             capture_output=True, text=True,
                             env={"DOCKER_HOST": populated.host, "PATH": "/usr/bin:/bin",
                                  "DOCKER_CONFIG": str(populated.root / "client-config")})
        _assert_matches_df(metrics, _cli_df(populated, lambda *a: out.stdout), newer)


def _sha(image_id: str) -> str:
    """Image IDs as the API gives them (Podman's CLI prints some without ``sha256:``)."""
    return image_id if image_id.startswith("sha256:") else f"sha256:{image_id}"


@EVERY_ENGINE
def test_image_series_match_images(populated: Dockerd | Podman, exporter_factory) -> None:
    d = populated
    started = time.time()
    exp = _ready_exporter(exporter_factory, d.host)
    metrics = exp.scrape()
    scraped = time.time()
    listed = d.cli("images", "--no-trunc", "--format",
                   "{{.Repository}}:{{.Tag}} {{.ID}}").splitlines()
    tagged = {tuple(line.split()) for line in listed if "<none>" not in line}
    series = {(lb["image"], lb["id"]) for lb, _ in metrics.select("docker_image_info")
              if lb["tag"] != "<none>"}
    assert series == tagged
    assert (d.local("hygiene-app:latest"), d.image_id("hygiene-app:2")) in series

    dangling = {_sha(i) for i in d.cli("images", "--no-trunc", "-q", "-f",
                                       "dangling=true").split()}
    assert len(dangling) >= 1
    assert metrics.get("docker_images_dangling") == len(dangling)
    for image_id in dangling:
        assert metrics.get("docker_image_info", id=image_id, tag="<none>") == 1
    dangling_sizes = sum(int(d.cli("image", "inspect", "-f", "{{.Size}}", i))
                         for i in dangling)
    # What a prune frees (tests/test_prune.py): the dangling build's own small layer, not
    # the base image it shares.
    assert 0 < metrics.get("docker_images_dangling_bytes") < dangling_sizes / 2

    for image_id in {i for _, i in tagged}:
        inspect = json.loads(d.cli("image", "inspect", image_id))[0]
        assert metrics.get("docker_image_size_bytes", id=image_id) == inspect["Size"]
        created = metrics.get("docker_image_created_timestamp_seconds", id=image_id)
        assert created == pytest.approx(_rfc3339(inspect["Created"]), abs=1)
        tagged_at = metrics.get("docker_image_last_tagged_timestamp_seconds", id=image_id)
        if isinstance(d, Podman) or inspect["Metadata"]["LastTagTime"].startswith("0001-"):
            # Podman never sets LastTagTime, Docker not for a pull: the exporter's own first
            # sight under the tag, here its start (a fresh state file, no pull since).
            assert started <= tagged_at <= scraped, (image_id, started, tagged_at, scraped)
        else:
            assert tagged_at == pytest.approx(_rfc3339(inspect["Metadata"]["LastTagTime"]),
                                              abs=1e-3)

    users = d.cli("ps", "-aq", "--no-trunc").split()
    expected: dict[str, int] = {}
    for cid in users:
        image_id = _sha(d.cli("inspect", "-f", "{{.Image}}", cid).strip())
        expected[image_id] = expected.get(image_id, 0) + 1
    assert sum(expected.values()) == 3
    for lb, value in metrics.select("docker_image_containers"):
        assert value == expected.get(lb["id"], 0), lb


def _rfc3339(text: str) -> float:
    from exporter.timestamps import parse_timestamp

    value = parse_timestamp(text)
    assert value is not None
    return value


@EVERY_ENGINE
def test_container_series(populated: Dockerd | Podman, exporter_factory) -> None:
    d = populated
    exp = _ready_exporter(exporter_factory, d.host)
    metrics = exp.scrape()
    states = {lb["container"]: (lb["state"], lb["image"]) for lb, _ in
              metrics.select("docker_container_info")}
    assert states["hygiene-running"] == ("running", d.local("hygiene-app:1"))
    assert states["hygiene-stopped"] == ("exited", d.local("hygiene-app:2"))
    # Created as docker.io/library/hygiene-base:1 on Docker: labels use the short form.
    assert states["hygiene-created"] == ("created", d.local("hygiene-base:1"))
    running_id = d.cli("inspect", "-f", "{{.Id}}", "hygiene-running").strip()
    assert metrics.get("docker_container_info", container="hygiene-running",
                       id=running_id) == 1
    for name in ("hygiene-running", "hygiene-stopped", "hygiene-created"):
        assert metrics.get("docker_container_image_stale", container=name) == 0
        created = json.loads(d.cli("inspect", name))[0]["Created"]
        assert metrics.get("docker_container_created_timestamp_seconds",
                           container=name) == pytest.approx(_rfc3339(created), abs=1)


def test_removed_objects_disappear(populated: Dockerd | Podman, exporter_factory) -> None:
    d = populated
    ephemeral = d.local("hygiene-ephemeral:1")
    d.cli("tag", "hygiene-base:1", "hygiene-ephemeral:1")
    d.cli("create", "--name", "hygiene-ephemeral", *d.RUN, "hygiene-ephemeral:1",
          "/bin/busybox", "true")
    exp = _ready_exporter(exporter_factory, d.host)
    exp.wait_metrics(lambda m: m.select("docker_image_info", image=ephemeral)
                     and m.select("docker_container_info", container="hygiene-ephemeral"),
                     what="the ephemeral tag and container")
    d.cli("rm", "hygiene-ephemeral")
    d.cli("rmi", "hygiene-ephemeral:1")
    exp.wait_metrics(lambda m: not m.select("docker_image_info", image=ephemeral)
                     and not m.select("docker_container_info", container="hygiene-ephemeral"),
                     what="the removed tag and container to disappear")


# Not run on Podman: what the scheduling tests below pin is the exporter's own behaviour
# (scrapes never wait on the engine, one /system/df at a time), whatever the engine is.
def test_scrapes_never_call_the_engine_and_df_never_overlaps(
        dockerd: Dockerd, exporter_factory, tmp_path: Path) -> None:
    proxy = EngineProxy(dockerd.socket, tmp_path / "proxy.sock").start()
    try:
        # A /system/df slower than its interval: calls must not pile up.
        proxy.delays["/system/df"] = 2.5
        exp = exporter_factory("--docker.host", proxy.host, "--collector.engine.interval", "1h",
                               "--collector.disk.interval", "1s", "--upstream.mode", "off",
                               "--events.enabled", "false")
        wait_for(lambda: proxy.counts["GET /system/df"] >= 3, 20, "three df calls")
        assert proxy.max_in_flight["/system/df"] == 1

        before = dict(proxy.counts)
        durations = []
        for _ in range(50):
            started = time.monotonic()
            exp.scrape_text()
            durations.append(time.monotonic() - started)
        engine_calls = {k: v - before.get(k, 0) for k, v in proxy.counts.items()
                        if k != "GET /system/df" and v != before.get(k, 0)}
        assert engine_calls == {}, "scrapes reached the engine"
        # While a 2.5 s df is under way, no scrape waits for it.
        assert max(durations) < 1.0, durations
        metrics = exp.scrape()
        assert metrics.get("docker_disk_objects", kind="images") > 0
        assert metrics.get("docker_exporter_collector_duration_seconds",
                           collector="disk") >= 2.5
    finally:
        proxy.stop()


def test_second_refresh_inspects_nothing_new(engine: Dockerd | Podman, exporter_factory,
                                             tmp_path: Path) -> None:
    proxy = EngineProxy(engine.socket, tmp_path / "proxy.sock").start()
    try:
        exp = exporter_factory("--docker.host", proxy.host, "--collector.engine.interval",
                               "1s", "--collector.disk.interval", "1h",
                               "--events.enabled", "false")
        wait_for(lambda: proxy.counts["GET /images/json"] >= 2, 10, "a second refresh")
        inspects = proxy.counts["GET /images/{id}/json"]
        wait_for(lambda: proxy.counts["GET /images/json"] >= 4, 10, "two more refreshes")
        assert proxy.counts["GET /images/{id}/json"] == inspects
        # Docker: one inspect per image, for LastTagTime; Podman never sets it: none, and
        # the log says so once.
        assert inspects >= 1 if engine.name == "dockerd" else inspects == 0
        assert exp.log().count("the engine is Podman") == (engine.name == "podman")
        assert all(k.startswith("GET ") for k in proxy.counts), proxy.counts
    finally:
        proxy.stop()


def test_a_read_with_nothing_changed_gives_the_same_snapshot(dockerd: Dockerd) -> None:
    """Equal answers and inputs give the last snapshot itself (not built again); a new tag, a
    pull the event stream saw, a removed tag each give a new one."""
    from exporter.sources.engine import Engine
    from exporter.sources.inventory import EngineReader

    pulls: dict[str, float] = {}
    engine = Engine(dockerd.host, 30.0)
    reader = EngineReader(engine, pull_times=lambda: dict(pulls))
    try:
        first = reader.read()
        assert reader.read() is first
        dockerd.cli("tag", "hygiene-base:1", "unchanged-read:1")
        tagged = reader.read()
        assert tagged is not first
        assert any("unchanged-read:1" in i.tags for i in tagged.images)
        assert reader.read() is tagged
        pulls["unchanged-read:1"] = time.time()  # a pull of the same image: same tags
        pulled = reader.read()
        assert pulled is not tagged and reader.read() is pulled
        dockerd.cli("rmi", "unchanged-read:1")
        untagged = reader.read()
        assert not any("unchanged-read:1" in i.tags for i in untagged.images)
        assert reader.read() is untagged
    finally:
        engine.close()
