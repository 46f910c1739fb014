"""The status model behind /, /status.json and report: order, sizes, ages, words, masking."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import pytest

from exporter import config, status
from exporter.report import render
from exporter.snapshots import (
    Container,
    DiskSnapshot,
    EngineSnapshot,
    HarborRepository,
    HarborSnapshot,
    HubRepository,
    HubSnapshot,
    Image,
    ImageVersions,
    KindUsage,
    TagState,
    UpstreamSnapshot,
    VersionsSnapshot,
    Volume,
)
from exporter.sources.loop import Status as SourceStatus
from exporter.state import StateStore, read_snapshot
from exporter.timestamps import PLACEHOLDER_BEFORE, build_time, parse_timestamp
from exporter.values import redact_url
from exporter.web import pages

NOW = 1_795_838_017.0  # 2026-11-28 03:53:37 UTC
DAY = 86400.0


def image(n: int, tags: tuple[str, ...], created: float, last_tagged: float | None = None,
          containers: int = 0, size: int = 1_000_000) -> Image:
    return Image(f"sha256:{n:064x}", tags, (), size, created, last_tagged, containers)


def container(name: str, ref: str, image_id: int, state: str = "running",
              stale: bool = False) -> Container:
    return Container(f"{hash(name) & 0xffff:064x}", name, ref, f"sha256:{image_id:064x}", state,
                     NOW - 30 * DAY, stale)


def engine() -> EngineSnapshot:
    """app:1 moved on locally (image 2 replaced 1); db:2 and web:1.25 come from registries."""
    images = (
        image(1, (), NOW - 400 * DAY, containers=2),  # what app:1 named before the pull
        image(2, ("app:1",), NOW - 3 * DAY, last_tagged=NOW - 2 * DAY),
        image(3, ("db:2",), NOW - 90 * DAY, containers=1),
        image(4, ("web:1.25",), NOW - 200 * DAY, containers=2),
        image(5, ("local:dev",), NOW - 1 * DAY),
    )
    containers = (
        container("app-exited", "app:1", 1, state="exited", stale=True),
        container("app-running", "app:1", 1, stale=True),
        container("db", "db:2", 3),
        container("web", "web:1.25", 4),
        container("web-2", "web:1.25", 4),
        container("fine", "local:dev", 5),
    )
    return EngineSnapshot(images, containers, "1.41")


def upstream() -> UpstreamSnapshot:
    return UpstreamSnapshot((
        TagState("app:1", f"sha256:{2:064x}", "current", checked=NOW - 60),
        TagState("db:2", f"sha256:{3:064x}", "drifted", upstream_config=f"sha256:{9:064x}",
                 checked=NOW - 60, drift_since=NOW - 5 * DAY),
        TagState("web:1.25", f"sha256:{4:064x}", "drifted", upstream_config=f"sha256:{8:064x}",
                 checked=NOW - 60, drift_since=NOW - 1 * DAY),
        TagState("local:dev", f"sha256:{5:064x}", "unknown", reason="no_repo_digest"),
        TagState("gone:1", "", "unknown", reason="rate_limited"),
    ))


def versions() -> VersionsSnapshot:
    return VersionsSnapshot(
        (ImageVersions("web:1.25", "1.25", "1.27", 2, NOW - 40 * DAY),),
        (("web", "web:1.25", True), ("web-2", "web:1.25", False)))


def model(**kwargs: object) -> status.Status:
    args: dict[str, object] = dict(
        docker_host="unix:///var/run/docker.sock", engine=engine(), engine_as_of=NOW - 5,
        upstream=upstream(), versions=versions(), now=NOW,
        drift=status.Knowledge("exporter", NOW - 60, "each tag is checked every 6h"),
        versions_knowledge=status.Knowledge("exporter", NOW - 60))
    args.update(kwargs)
    return status.build(**args)  # type: ignore[arg-type]


def test_containers_worst_first_with_since_when() -> None:
    rows = model().containers
    assert [r.name for r in rows] == [
        # two problems first; then running before exited; then the oldest problem first
        "web", "app-running", "app-exited", "db", "web-2", "fine"]
    web = rows[0]
    assert web.problems == ("drifted", "newer_version")
    assert web.drift_since == NOW - 1 * DAY and web.newer_since == NOW - 40 * DAY
    assert web.newer_version == "1.27" and web.versions_behind == 2
    assert web.since == NOW - 40 * DAY
    app = rows[1]
    # The tag is current upstream, but the container runs the old pull: stale and drifted,
    # since the image its tag names now was tagged here.
    assert app.problems == ("drifted", "stale")
    assert app.stale_since == NOW - 2 * DAY and app.drift_since == NOW - 2 * DAY
    # web-2's own labels rule out the newer version the tag has.
    assert {r.name: r.problems for r in rows}["web-2"] == ("drifted",)
    assert rows[-1].problems == () and rows[-1].drifted is None


def test_tags_drifted_first_then_behind_then_unknown() -> None:
    rows = model().tags
    assert [r.image for r in rows] == ["db:2", "web:1.25", "gone:1", "app:1", "local:dev"]
    assert [r.attention for r in rows] == [True, True, True, False, False]
    assert rows[1].containers == ("web", "web-2")
    assert status.registry_reason(rows[2].reason) == \
        "the registry's rate limit is spent; checks resume when it resets"


def test_images_oldest_first_disk_most_reclaimable_first() -> None:
    disk = DiskSnapshot(KindUsage(5, 3, 10_000_000, 4_000_000), KindUsage(6, 4, 2000, 1000),
                        KindUsage(3, 1, 930_000, 430_000), KindUsage(2, 0, 100, 100),
                        (Volume("small-unused", 30_000, 0), Volume("used", 500_000, 1),
                         Volume("big-unused", 400_000, 0), Volume("unknown", None, None)))
    s = model(disk=disk, disk_as_of=NOW - 60)
    assert [i.created for i in s.images] == sorted(i.created for i in s.images)
    assert s.images[0].name == "<none>"
    assert s.disk is not None
    assert [k.kind for k in s.disk.kinds] == ["images", "volumes", "containers", "build_cache"]
    # Unused first, then the largest; a size the engine did not compute counts as none.
    assert [v.name for v in s.disk.volumes] == ["big-unused", "small-unused", "used", "unknown"]
    assert s.disk.reclaimable_bytes == 4_431_100


EPOCH_1980 = 315532801.0  # 1980-01-01T00:00:01Z, as reproducible builds write it


@pytest.mark.parametrize("created, built", [
    (0.0, None),  # 1970-01-01: ko, Nix
    (1.0, None),
    (EPOCH_1980, None),  # distroless, Paketo
    (1363132799.0, None),  # one second before the cut-off
    (1363132800.0, 1363132800.0),  # 2013-03-13T00:00:00Z: a build time
    (NOW - DAY, NOW - DAY),
    (None, None),
])
def test_reproducible_build_dates_are_placeholders(created: float | None,
                                                   built: float | None) -> None:
    assert build_time(created) == built


def test_the_cut_off_is_the_day_the_docs_and_rules_name() -> None:
    assert PLACEHOLDER_BEFORE == parse_timestamp("2013-03-13T00:00:00Z") == 1363132800
    assert "placeholder dates before 2013-03-13 (unix 1363132800) mean a reproducible build" \
        in Path(__file__).parent.parent.joinpath("docs", "metrics.md").read_text()


def test_reproducible_builds_have_no_age_on_the_page_or_in_the_report() -> None:
    old, repro = image(7, ("old:2019",), NOW - 2000 * DAY), image(8, ("distroless:1",), EPOCH_1980)
    zero = image(9, ("ko:1",), 0.0)
    snap = engine()
    s = model(engine=EngineSnapshot((*snap.images, old, repro, zero), snap.containers, "1.41"))
    # Oldest first, reproducible builds last; their created stays what the config says.
    assert [i.name for i in s.images][-2:] == ["ko:1", "distroless:1"]
    assert s.images[0].name == "old:2019" and s.images[-1].created == EPOCH_1980
    assert [i.built for i in s.images[-2:]] == [None, None]
    assert status.to_json(s)["images"][-1]["created"] == "1980-01-01T00:00:01Z"
    page = pages.render_status(s, "")
    assert "46 years" not in page and "56 years" not in page
    assert page.count(status.NO_DATE) == 2
    assert 'title="created 1980-01-01 00:00:01 UTC: a placeholder, not a build time"' in page
    # The card names the oldest dated image: 2000 days, not 46 years.
    assert re.search(r'<div class="n">5 years</div><div class="l">age of the oldest image',
                     page), page
    text = render(s, oldest=len(s.images))
    rows = {line.split()[0]: line for line in text.splitlines()
            if line.startswith(("old:2019", "distroless:1", "ko:1"))}
    assert "5 years" in rows["old:2019"]
    assert status.NO_DATE in rows["distroless:1"] and status.NO_DATE in rows["ko:1"]
    assert "years" not in rows["distroless:1"] + rows["ko:1"]
    # Only reproducible builds: no "oldest image" card at all.
    only = model(engine=EngineSnapshot((repro,), (), "1.41"))
    assert "age of the oldest image" not in pages.render_status(only, "")


def test_a_newer_version_with_a_placeholder_date_has_no_since() -> None:
    s = model(versions=VersionsSnapshot(
        (ImageVersions("web:1.25", "1.25", "1.27", 2, EPOCH_1980),),
        (("web", "web:1.25", True), ("web-2", "web:1.25", False))))
    web = next(r for r in s.containers if r.name == "web")
    assert web.newer_version == "1.27" and web.newer_since is None
    assert web.since == NOW - 1 * DAY  # its drift, the only dated problem
    assert next(t for t in s.tags if t.image == "web:1.25").newer_since is None
    assert "46 years" not in pages.render_status(s, "") and "46 years" not in render(s)


def test_sources_failing_first_engine_first_with_reasons_in_words() -> None:
    host = "unix:///run/nothing/docker.sock"
    missing = ("unreachable: Error while fetching server API version: ('Connection aborted.', "
               "FileNotFoundError(2, 'No such file or directory'))")
    rows = [status.source_row(name, st, host) for name, st in (
        ("versions", SourceStatus(True, False, 0, None, "RuntimeError('no engine snapshot yet')")),
        ("disk", SourceStatus(True, False, 0.001, None, missing)),
        ("upstream", SourceStatus(True, True, 1.0, NOW - 60)),
        ("engine", SourceStatus(True, False, 0.001, NOW - DAY, missing)),
        ("hub", SourceStatus()),
        ("events", SourceStatus(True, False, 0, None, "disconnected")),
    )]
    s = model(sources=rows)
    assert [(r.name, r.state) for r in s.sources] == [
        ("engine", "failing"), ("disk", "failing"), ("events", "failing"),
        ("versions", "failing"), ("hub", "starting"), ("upstream", "ok")]
    assert s.sources[0].reason == (
        "cannot reach the Docker Engine at unix:///run/nothing/docker.sock: the socket does "
        "not exist: is dockerd running, and does docker.host name its socket?")
    assert s.sources[0].last_success == NOW - DAY
    assert s.sources[3].reason == "waiting for the first successful read of the engine"
    assert "reconnects" in s.sources[2].reason
    refused = status.explain("unreachable: ('Connection aborted.', ConnectionRefusedError(111, "
                             "'Connection refused'))", "engine", "tcp://127.0.0.1:2375")
    assert refused.startswith("cannot reach the Docker Engine at tcp://127.0.0.1:2375: "
                              "connection refused")
    denied = status.explain("unreachable: ('Connection aborted.', PermissionError(13, "
                            "'Permission denied'))", "engine", "unix:///var/run/docker.sock")
    assert "docker group" in denied
    assert status.explain("HubError('every Hub request failed; last: HTTP 503')", "hub") == \
        "Docker Hub API: every Hub request failed; last: HTTP 503"
    assert "\n" not in status.explain("api_error: first\nsecond", "engine", "unix:///x")


@pytest.mark.parametrize(("size", "text"), [
    (0, "0B"), (999, "999B"), (1000, "1kB"), (30_000, "30kB"), (307_200, "307.2kB"),
    (1_982_263, "1.982MB"), (187_000_000, "187MB"), (12_345_678_901, "12.35GB"),
    (2 * 10**15, "2PB"),
])
def test_sizes_read_as_the_docker_cli_prints_them(size: int, text: str) -> None:
    assert status.human_size(size) == text


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "just now"), (4, "just now"), (1, "just now"), (59, "59 seconds ago"),
    (61, "61 seconds ago"), (130, "2 minutes ago"), (3 * DAY + 5, "3 days ago"),
    (36 * 3600, "36 hours ago"), (800 * DAY, "2 years ago"), (-300, "in 5 minutes"),
])
def test_relative_ages(seconds: float, text: str) -> None:
    assert status.ago(NOW - seconds, NOW) == text
    assert status.human_age(1) == "1 second"


def test_json_twin_shape() -> None:
    hub = HubSnapshot((HubRepository("library/nginx", 10, 2, NOW - DAY),
                       HubRepository("library/redis", 99, 1, None)))
    harbor = HarborSnapshot((HarborRepository("harbor.local", "team", "app", 4),))
    counts = status.pulls([("busybox", 1), ("nginx", 3)], NOW - 3600, hub,
                          ([(("reg", "a"), 1)], [(("reg", "a"), 2), (("reg", "b"), 5)]), harbor)
    doc = json.loads(status.dumps(model(pull_counts=counts)))
    assert doc["schema"] == status.SCHEMA
    assert set(doc) == {"schema", "generated", "version", "docker_host", "engine_api",
                        "engine_as_of", "disk", "containers", "tags", "images", "pulls",
                        "sources", "drift", "versions", "engine", "engine_version"}
    assert doc["generated"] == "2026-11-28T03:53:37Z"
    web = doc["containers"][0]
    assert web["name"] == "web" and web["problems"] == ["drifted", "newer_version"]
    assert web["drift_since"] == "2026-11-27T03:53:37Z" and web["stale_since"] is None
    assert doc["pulls"]["host"] == {"since": "2026-11-28T02:53:37Z", "repositories": [
        {"repository": "nginx", "pulls": 3}, {"repository": "busybox", "pulls": 1}]}
    assert [r["repository"] for r in doc["pulls"]["hub"]] == ["library/redis", "library/nginx"]
    assert doc["pulls"]["registry"] == [
        {"registry": "reg", "repository": "a", "pulls": 1, "pushes": 2},
        {"registry": "reg", "repository": "b", "pulls": 0, "pushes": 5}]
    assert doc["pulls"]["harbor"][0]["project"] == "team"
    assert doc["drift"] == {"origin": "exporter", "as_of": "2026-11-28T03:52:37Z",
                            "detail": "each tag is checked every 6h"}
    assert doc["images"][0]["tags"] == [] and doc["images"][0]["size_bytes"] == 1_000_000
    assert json.loads(status.dumps(model(), indent=2)) == json.loads(status.dumps(model()))


def test_saved_snapshots_round_trip_and_unchanged_ones_are_not_rewritten(
        tmp_path: Path) -> None:
    path = str(tmp_path / "state.db")
    store = StateStore(path)
    snap = UpstreamSnapshot(upstream().states, ratelimits=(("r", 1, 0),),
                            requests=((("r", "HEAD", "200"), 5),))
    assert status.remember(store, "upstream", snap) is snap
    status.remember(store, "versions", versions())
    first = read_snapshot(path, "upstream")
    assert first is not None
    assert status.upstream_from_json(first[1]) == UpstreamSnapshot(upstream().states)
    assert status.versions_from_json(read_snapshot(path, "versions")[1]) == versions()
    db = sqlite3.connect(path)  # as if saved a minute ago
    with db:
        db.execute("UPDATE snapshots SET taken = taken - 60 WHERE name = 'upstream'")
    db.close()
    status.remember(store, "upstream", snap)
    assert read_snapshot(path, "upstream")[0] == first[0] - 60  # unchanged: not rewritten
    status.remember(store, "upstream", UpstreamSnapshot(upstream().states[:2]))
    assert read_snapshot(path, "upstream")[0] > first[0] - 1  # changed: saved now
    store.close()
    assert read_snapshot(str(tmp_path / "absent.db"), "upstream") is None
    assert not (tmp_path / "absent.db").exists()
    with pytest.raises(ValueError):
        status.upstream_from_json('{"states": [{"image": "x"}]}')


def test_masking_of_secrets_and_user_info() -> None:
    assert redact_url("tcp://bob:hunter2@10.0.0.1:2376") == \
        "tcp://<masked>@10.0.0.1:2376"
    assert redact_url("ssh://deploy@host") == "ssh://<masked>@host"
    assert redact_url("unix:///var/run/docker.sock") == "unix:///var/run/docker.sock"
    cfg = config.build({"docker.host": "tcp://bob:hunter2@127.0.0.1:2375",
                        "upstream.prometheus_url": "http://prom:s3cr3t@127.0.0.1:9090"},
                       environ={"DOCKER_HYGIENE_WEBHOOK_DISTRIBUTION_SECRET": "Bearer t0ken"})
    page = pages.config_page(cfg)
    assert "hunter2" not in page and "s3cr3t" not in page and "t0ken" not in page
    assert "tcp://&lt;masked&gt;@127.0.0.1:2375" in page
    assert "http://&lt;masked&gt;@127.0.0.1:9090" in page
    assert "webhook.distribution.secret</code></td><td data-label=\"Value\"><code>&lt;masked" \
        in page
    s = model(docker_host="tcp://bob:hunter2@127.0.0.1:2375")
    assert s.docker_host == "tcp://<masked>@127.0.0.1:2375"
    assert "hunter2" not in pages.render_status(s, "") and "hunter2" not in status.dumps(s)


def test_page_is_self_contained_and_escapes_what_it_shows() -> None:
    evil = EngineSnapshot(
        (image(7, ("evil:<script>alert(1)</script>",), NOW - DAY),),
        (container('"><img src=x onerror=alert(1)>', "evil:1", 7, stale=True),), "1.41")
    page = pages.render_status(model(engine=evil), pages.nav(config.build({}, environ={})))
    assert "<script>alert" not in page and "<img src=x" not in page
    assert "&lt;script&gt;" in page and "&lt;img src=x" in page
    # Nothing is fetched from elsewhere: no stylesheets, scripts, fonts or images by URL.
    assert not re.search(r"<(img|iframe|object|embed)\b|<script [^>]*src|@import|url\(",
                         page)
    assert re.findall(r"<link [^>]*>", page) == [pages.ICON]
    assert 'href="data:image/svg+xml,' in pages.ICON
    assert page.count("<script>") == 1 and "location.reload()" in page
    assert re.findall(r'href="(https?:[^"]*)"', page) == [status.DOCS_URL]
    assert "@media (prefers-color-scheme:dark)" in page and "@media (max-width:700px)" in page
    # Every time says its exact value on hover.
    times = re.findall(r"<time [^>]*>", page)
    assert times and all(re.fullmatch(
        r'<time datetime="\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ" title="[^"]+ UTC">', t) for t in times)


def test_containerd_store_container_drift_agrees_with_the_metric() -> None:
    """On the containerd store image IDs are index digests: a re-pull of an index that only
    changed another platform gives the tag a new ID, while the container runs the very same
    platform manifest. The page must say what docker_container_upstream_drift says."""
    from exporter.collectors.upstream import UpstreamCollector
    from exporter.sources.loop import Source

    old_index, new_index = "sha256:" + "1" * 64, "sha256:" + "2" * 64
    manifest = "sha256:" + "3" * 64
    image = Image(new_index, ("reg.example/app:1",), (f"reg.example/app@{new_index}",),
                  1000, 1.0e9, None, 0, platform_manifest=manifest)
    container = Container("c1", "app", "reg.example/app:1", old_index, "running", 1.0e9,
                          stale=False, manifest=manifest)
    snap = EngineSnapshot((image,), (container,), "1.48")
    state = TagState("reg.example/app:1", new_index, "current", upstream_digest=new_index,
                     checked=1.0e9, upstream_manifest=manifest)
    up = UpstreamSnapshot((state,))
    engine_source: Source[EngineSnapshot] = Source("engine", lambda: snap, 60)
    upstream_source: Source[UpstreamSnapshot] = Source("upstream", lambda: up, 60)
    engine_source.snapshot, upstream_source.snapshot = snap, up
    metric = {s.labels["container"]: s.value for f in UpstreamCollector(
        upstream_source, engine_source, 60).collect() if f.name == "docker_container_upstream_drift"
        for s in f.samples}
    assert metric == {"app": 0}
    row, = status.container_rows(snap, up, None)
    assert row.drifted is False and "drifted" not in row.problems
