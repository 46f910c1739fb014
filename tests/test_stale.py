"""A tag pulled again while a container still runs the old image makes that container stale."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import pytest

from exporter.timestamps import parse_timestamp
from tests.services import Dockerd, Metrics, Podman, Registry
from tests.test_upstream import publish_elsewhere, push_version


def _push_version(d: Dockerd | Podman, ref: str, content: str) -> str:
    image_id = d.build(ref, "FROM hygiene-base:1\nCOPY v /v\n", {"v": content})
    d.push(ref)
    return image_id


def test_repulled_tag_makes_container_stale(engine: Dockerd | Podman, registry: Registry,
                                            exporter_factory) -> None:
    d = engine
    ref = f"{registry.address}/hygiene/stale-{d.name}:latest"
    old_id = _push_version(d, ref, "version one")
    d.cli("rmi", ref)
    d.pull(ref)
    assert d.image_id(ref) == old_id
    run = d.RUN
    d.cli("run", "-d", "--name", "hygiene-old-app", *run, ref, "/bin/busybox", "sleep", "3600")
    d.cli("run", "-d", "--name", "hygiene-other", *run, "hygiene-base:1",
          "/bin/busybox", "sleep", "3600")

    exp = exporter_factory("--docker.host", d.host, "--collector.engine.interval", "1s")
    exp.wait_metrics(lambda m: m.get("docker_container_image_stale",
                                     container="hygiene-old-app") == 0, what="not stale yet")

    # A new version is pushed from elsewhere, then pulled here: the tag moves on.
    _push_version(d, ref, "version two")
    d.cli("rmi", ref)
    d.cli("tag", old_id, f"{ref}-keep")  # keep the old ID tagged by something else
    d.pull(ref)
    new_id = d.image_id(ref)
    assert new_id != old_id

    metrics = exp.wait_metrics(lambda m: m.get("docker_container_image_stale",
                                               container="hygiene-old-app") == 1,
                               what="the container to go stale")
    short = ref.removeprefix("docker.io/")
    assert metrics.get("docker_container_image_stale", container="hygiene-old-app",
                       image=short) == 1
    assert metrics.get("docker_container_image_stale", container="hygiene-other") == 0
    assert metrics.get("docker_container_info", container="hygiene-old-app",
                       image_id=old_id, image=short) == 1
    digest = d.cli("image", "inspect", "-f", "{{index .RepoDigests 0}}", ref).strip()
    repo = ref.rsplit(":", 1)[0]
    # The pull of an image built here moves the tag before it records the pulled digest: a
    # read in between has the tag with the digest of the build, so wait for the pulled one.
    exp.wait_metrics(lambda m: m.get("docker_image_info", image=ref, id=new_id, repository=repo,
                                     tag="latest", digest=digest.partition("@")[2]) == 1,
                     what="the pulled digest")

    # The report says the same to a person, from one read of the engine.
    report = subprocess.run([sys.executable, "-m", "exporter", "report", "--docker.host",
                             d.host], capture_output=True, text=True, check=True)
    rows = [x for x in report.stdout.splitlines() if x.startswith("hygiene-old-app ")]
    assert len(rows) == 1 and "stale" in rows[0], report.stdout
    assert not [x for x in report.stdout.splitlines() if x.startswith("hygiene-other ")]
    assert "DISK USAGE" in report.stdout

    # Recreated on the new image: stale again goes 0.
    d.cli("rm", "-f", "hygiene-old-app")
    d.cli("run", "-d", "--name", "hygiene-old-app", *run, ref, "/bin/busybox", "sleep", "3600")
    exp.wait_metrics(lambda m: m.get("docker_container_image_stale",
                                     container="hygiene-old-app") == 0,
                     what="the recreated container to be current")
    d.cli("rm", "-f", "hygiene-old-app", "hygiene-other")


def test_a_repulled_tag_has_a_last_tagged_time_that_survives_a_restart(
        engine: Dockerd | Podman, registry: Registry, exporter_factory, tmp_path) -> None:
    """dockerd records no LastTagTime for a pull and Podman none at all: the exporter's own
    time stands in, the pull's (from the event stream), kept in the state store."""
    d = engine
    ref = f"{registry.address}/hygiene/retagged-{d.name}:latest"
    old_id = push_version(d, ref, "tagged one")
    d.cli("rmi", ref)
    d.pull(ref)
    d.cli("run", "-d", "--name", "hygiene-retagged", *d.RUN, ref, "/bin/busybox", "sleep",
          "3600")
    # v2 comes from elsewhere: built and pushed, then gone from this host, so that the pull
    # below fetches it (a local build would have its own LastTagTime on dockerd).
    new_id = publish_elsewhere(d, ref, "tagged two")
    d.cli("rmi", new_id)

    state = str(tmp_path / "retagged.db")
    args = ("--docker.host", d.host, "--collector.engine.interval", "1s", "--state.path",
            state, "--upstream.include", "^nothing$")
    exp = exporter_factory(*args)
    exp.wait_metrics(lambda m: m.get("docker_container_image_stale",
                                     container="hygiene-retagged") == 0, what="not stale yet")
    started = time.time()
    d.pull(ref)
    ended = time.time()
    assert d.image_id(ref) == new_id != old_id
    if isinstance(d, Dockerd):  # what makes this needed on dockerd
        assert d.cli("image", "inspect", "-f", "{{.Metadata.LastTagTime}}",
                     ref).startswith("0001-")

    def tagged(m: Metrics) -> float | None:
        return m.get("docker_image_last_tagged_timestamp_seconds", id=new_id)

    m = exp.wait_metrics(lambda m: m.get("docker_container_image_stale",
                                         container="hygiene-retagged") == 1
                         and tagged(m) is not None, what="stale, with a last-tagged time")
    # The event stream's pull time; it may come a read after the image: wait for it.
    m = exp.wait_metrics(lambda m: started <= tagged(m) <= ended, timeout=10,
                         what=f"the pull's time, between {started} and {ended}")
    when = tagged(m)
    exp.stop()

    # Restarted as a fleet host runs it (upstream checks off): the state store is kept there
    # too, for these times.
    again = exporter_factory(*args, "--upstream.mode", "off")
    m = again.wait_metrics(lambda m: tagged(m) is not None, what="the time after a restart")
    assert tagged(m) == when
    # The status page's stale container has the same time.
    page = httpx.get(f"{again.url}/status.json", timeout=10).json()
    row = next(c for c in page["containers"] if c["name"] == "hygiene-retagged")
    assert parse_timestamp(row["stale_since"]) == pytest.approx(when, abs=1), row
    d.cli("rm", "-f", "hygiene-retagged")
