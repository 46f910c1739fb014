"""The whole exposition, pinned: any change to names, labels, HELP or values shows in review.

Snapshots come from Engine API answers recorded on a real dockerd (tests/fixtures), and for a
Kubernetes node (golden/containerd.prom) from CRI answers recorded on a real containerd
1.6.20 (tests/fixtures/cri-1.6: two pods, one on a tag pulled again since, an unused image;
the mountpoint rewritten to containerd's default root). To accept an intended change:
UPDATE_GOLDEN=1 pytest tests/test_golden.py, then review the diff.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest

from exporter.app import Parts, build_registry
from exporter.snapshots import (
    DiskSnapshot,
    EngineSnapshot,
    HarborRepository,
    HarborSnapshot,
    HubRepository,
    HubSnapshot,
    ImageVersions,
    TagState,
    UpstreamSnapshot,
    VersionsSnapshot,
)
from exporter.sources.disk import parse_disk_usage
from exporter.sources.events import EventStream
from exporter.sources.inventory import build_engine_snapshot
from exporter.sources.loop import Source, Status
from exporter.sources.webhook import DistributionWebhook
from exporter.state import StateStore
from exporter.timestamps import parse_timestamp

FIXTURES = Path(__file__).parent / "fixtures"
GOLDEN = Path(__file__).parent / "golden" / "metrics.prom"
CRI_GOLDEN = Path(__file__).parent / "golden" / "containerd.prom"


def load(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def recorded_sources() -> tuple[Source[EngineSnapshot], Source[DiskSnapshot],
                              Source[UpstreamSnapshot]]:
    inspect = load("engine-1.41/inspect.json")
    engine: Source[EngineSnapshot] = Source("engine", lambda: None, 15.0)
    engine.snapshot = build_engine_snapshot(
        load("engine-1.41/images_json.json"), load("engine-1.41/containers_json_all_1.json"),
        {k: parse_timestamp(v) for k, v in inspect["LastTagTime"].items()},
        inspect["ConfigImage"], "1.41")
    engine.status = Status(True, True, 0.25, 1795838000.0, "")
    disk: Source[DiskSnapshot] = Source("disk", lambda: None, 300.0)
    disk.snapshot = parse_disk_usage(load("engine-1.41/system_df.json"))
    disk.status = Status(True, False, 600.0, 1795837000.0, "timeout: read timed out")
    # Upstream states are not Engine answers: they are made up to cover every state.
    ids = {i.tags[0] if i.tags else "": i.id for i in engine.snapshot.images}
    upstream: Source[UpstreamSnapshot] = Source("upstream", lambda: None, 60.0)
    upstream.snapshot = UpstreamSnapshot(
        states=(
            TagState("base:1", ids["base:1"], "platform_unchanged", "", "sha256:" + "1" * 64,
                     ids["base:1"], 1795838100.0, signed=True, created=1790000000.0),
            TagState("built:1", ids["built:1"], "current", "", "sha256:" + "2" * 64, "",
                     1795838100.0, signed=False, created=1795000000.0),
            TagState("built:2", ids["built:2"], "drifted", "", "sha256:" + "3" * 64,
                     "sha256:" + "4" * 64, 1795838100.0, 1795830000.0, signed=False,
                     created=1795820000.0),
            TagState("registry.example.com:5000/team/base:1", ids["base:1"], "unknown",
                     "timeout", "", "", 1795800000.0, None),
        ),
        ratelimits=(("docker.io", 100, 76),),
        requests=((("docker.io", "HEAD", "200"), 12), (("docker.io", "TOKEN", "200"), 2),
                  (("registry.example.com:5000", "HEAD", "timeout"), 1)),
        digest_fallbacks=(("registry.example.com:5000", 1),),
    )
    upstream.status = Status(True, True, 1.5, 1795838100.0, "")
    return engine, disk, upstream


def registry_for_golden():
    return build_registry(parts_for_golden())


def parts_for_golden() -> Parts:
    engine, disk, upstream = recorded_sources()
    events = EventStream("unix:///nonexistent")
    for n, repo in enumerate(["127.0.0.1:5000/team/app", "busybox", "busybox"]):
        events.handle({"Type": "image", "Action": "pull", "timeNano": 1795838000_000000000 + n,
                       "Actor": {"ID": f"{repo}:latest", "Attributes": {"name": repo}}})
    hub: Source[HubSnapshot] = Source("hub", lambda: None, 3600.0)
    hub.snapshot = HubSnapshot((HubRepository("library/busybox", 7_000_000_000, 3300,
                                              1795000000.0),),
                               (("busybox:latest", 1794000000.0),))
    hub.status = Status(True, True, 0.4, 1795838000.0, "")
    webhook = DistributionWebhook("Bearer s3cret", {"127.0.0.1:5000": "internal"})
    webhook.handle("Bearer s3cret", "application/vnd.docker.distribution.events.v1+json",
                   (FIXTURES / "distribution-notifications.json").read_bytes())
    webhook.handle("Bearer wrong", "application/json", b"{}")
    harbor: Source[HarborSnapshot] = Source("harbor", lambda: None, 3600.0)
    harbor.snapshot = HarborSnapshot((HarborRepository("harbor.example", "team", "app", 9),))
    harbor.status = Status(True, True, 0.2, 1795838000.0, "")
    versions: Source[VersionsSnapshot] = Source("versions", lambda: None, 60.0)
    versions.snapshot = VersionsSnapshot(
        images=(ImageVersions("built:1", "1", "3", 2, 1795000000.0),
                ImageVersions("built:2", "2", "", 0, None)),
        containers=(("job", "built:2", False), ("web", "built:1", True)))
    versions.status = Status(True, True, 0.8, 1795838100.0, "")
    return Parts(engine=engine, disk=disk, upstream=upstream, versions=versions,
                 store=StateStore(None), events=events, hub=hub, webhook=webhook, harbor=harbor)


def cri_parts() -> Parts:
    """A containerd node as its recorded CRI answers make it; the same collectors."""
    from google.protobuf import json_format

    from exporter.sources.cri import build_cri_disk, build_cri_snapshot, cri

    def answer(name: str, message: Any) -> Any:
        return json_format.Parse((FIXTURES / "cri-1.6" / name).read_text(), message)

    images = list(answer("list_images.json", cri.ListImagesResponse()).images)
    containers = list(answer("list_containers.json", cri.ListContainersResponse()).containers)
    version = answer("version.json", cri.VersionResponse())
    created = {k: parse_timestamp(v) for k, v in load("cri-1.6/image_created.json").items()}
    engine: Source[EngineSnapshot] = Source("engine", lambda: None, 15.0)
    engine.snapshot = build_cri_snapshot(
        images, containers, created, load("cri-1.6/container_image_names.json"),
        {i.id: 1795838000.0 for i in images},
        (version.runtime_name, version.runtime_version, version.runtime_api_version))
    engine.status = Status(True, True, 0.02, 1795838000.0, "")
    disk: Source[DiskSnapshot] = Source("disk", lambda: None, 15.0)
    disk.snapshot = build_cri_disk(
        list(answer("image_fs_info.json", cri.ImageFsInfoResponse()).image_filesystems),
        lambda mountpoint: 100 * 10**9)  # statvfs: made up
    disk.status = Status(True, True, 0.01, 1795838000.0, "")
    return Parts(engine=engine, disk=disk, store=StateStore(None))


def render() -> str:
    return generate_latest(registry_for_golden()).decode()


@pytest.mark.parametrize(("parts", "golden"), [(parts_for_golden, GOLDEN),
                                               (cri_parts, CRI_GOLDEN)])
def test_exposition_matches_golden_file(parts: Any, golden: Path) -> None:
    text = generate_latest(build_registry(parts())).decode()
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(text)
    assert text == golden.read_text(), "exposition changed: UPDATE_GOLDEN=1 and review the diff"


def test_a_nodes_recorded_state_is_what_its_golden_file_claims() -> None:
    """Recorded on containerd: shop/web-0's web runs a tag pulled again since (stale);
    billing/web-0 has a container of the same name, not stale; one image is unused."""
    parts = cri_parts()
    snap, disk = parts.engine.snapshot, parts.disk.snapshot
    assert snap is not None and disk is not None
    by_pod = {(c.namespace, c.pod, c.name): c for c in snap.containers}
    assert set(by_pod) == {("billing", "web-0", "web"), ("shop", "web-0", "sidecar"),
                           ("shop", "web-0", "web")}
    web = by_pod[("shop", "web-0", "web")]
    assert web.image == "127.0.0.1:5000/shop/web:1.25" and web.stale
    assert not by_pod[("billing", "web-0", "web")].stale
    assert snap.engine == "containerd" and snap.api_version == "v1"
    assert disk.by_kind() == {} and disk.image_filesystems[0].used_bytes == 2093056
    unused = [i for i in snap.images if i.containers == 0]
    assert snap.gc_reclaimable() == sum(i.size for i in unused) and len(unused) == 3


def test_recorded_state_is_what_the_golden_file_claims() -> None:
    engine, disk, _upstream = recorded_sources()
    snap = engine.snapshot
    web = next(c for c in snap.containers if c.name == "web")
    # web was created from built:1, which was rebuilt since: the engine lists it by ID.
    assert web.image == "built:1" and web.stale
    job = next(c for c in snap.containers if c.name == "job")
    assert job.image == "built:2" and not job.stale
    assert [i.id for i in snap.images if i.dangling] == [web.image_id]
    assert disk.snapshot.containers.reclaimable == 5000


def test_cached_exposition_renders_the_same_bytes() -> None:
    """The per-snapshot text cache must never change what a scrape says."""
    from prometheus_client.openmetrics.exposition import generate_latest as openmetrics

    from exporter.app import build_collectors
    from exporter.exposition import Exposition

    parts = parts_for_golden()
    registry = build_registry(parts)
    exposition = Exposition(build_collectors(parts))
    for _ in range(2):  # cold, then from the cache
        assert exposition.render(generate_latest, False) == generate_latest(registry)
        assert exposition.render(openmetrics, True) == openmetrics(registry)
