"""A tag pulled again while a container still runs the old image makes that container stale."""

from __future__ import annotations

import subprocess
import sys

from tests.services import Dockerd, Podman, Registry


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
    assert metrics.get("docker_image_info", image=ref, id=new_id, repository=repo,
                       tag="latest", digest=digest.partition("@")[2]) == 1

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
