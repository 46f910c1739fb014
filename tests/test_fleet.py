"""Fleet mode: a central checker does one HEAD per distinct tag for every host."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.registries import access_log
from tests.services import Dockerd, Registry
from tests.test_upstream import publish_elsewhere, push_version


def _digest_info(m, image: str) -> str | None:
    found = [lb["digest"] for lb, v in m.select("docker_registry_tag_digest_info", image=image)]
    assert len(found) <= 1
    return found[0] if found else None


def test_central_checker_from_a_static_list(registry: Registry, dockerd: Dockerd,
                                            exporter_factory, tmp_path: Path) -> None:
    refs = [f"{registry.address}/hygiene/fleet{i}:1" for i in range(3)]
    for ref in refs:
        push_version(dockerd, ref, ref)
    before = access_log(registry)
    # The checker needs no Docker Engine: point it at nothing.
    exp = exporter_factory("--docker.host", f"unix://{tmp_path}/none.sock",
                           "--upstream.mode", "central", "--upstream.interval", "2s",
                           "--upstream.references", ",".join(refs))
    m = exp.wait_metrics(lambda m: all(_digest_info(m, r) for r in refs), what="digests")
    for ref in refs:
        local = dockerd.cli("image", "inspect", "-f", "{{index .RepoDigests 0}}", ref).strip()
        assert _digest_info(m, ref) == local.partition("@")[2]
    old = _digest_info(m, refs[0])
    assert m.get("docker_up") is None  # no engine of its own
    assert m.get("docker_exporter_collector_success", collector="upstream") == 1
    changed = m.get("docker_registry_tag_changed_timestamp_seconds", image=refs[0])

    publish_elsewhere(dockerd, refs[0], "fleet moved on")
    m = exp.wait_metrics(lambda m: m.get("docker_registry_tag_changed_timestamp_seconds",
                                         image=refs[0]) != changed, what="the change")
    assert m.get("docker_registry_tag_changed_timestamp_seconds", image=refs[0]) > changed
    assert _digest_info(m, refs[0]) != old
    assert m.get("docker_registry_tag_changed_timestamp_seconds", image=refs[1]) == \
        pytest.approx(changed, abs=5)
    time.sleep(1)
    counts = access_log(registry) - before
    cycles = m.get("docker_registry_requests_total", registry=registry.address, method="HEAD",
                   code="200") / len(refs)
    assert cycles == int(cycles), "every cycle asks each tag exactly once"
    assert counts[("GET", "manifest")] == 0
    dockerd.cli("pull", refs[0])


def test_shards_split_the_tags(registry: Registry, exporter_factory, tmp_path: Path,
                               dockerd: Dockerd) -> None:
    refs = [f"{registry.address}/hygiene/fleet{i}:1" for i in range(3)]
    for ref in refs:
        push_version(dockerd, ref, ref)
    seen = []
    for shard in ("0/2", "1/2"):
        exp = exporter_factory("--docker.host", f"unix://{tmp_path}/none.sock",
                               "--upstream.mode", "central", "--upstream.shard", shard,
                               "--upstream.references", ",".join(refs))
        m = exp.wait_metrics(lambda m: m.get("docker_exporter_collector_success",
                                             collector="upstream") == 1)
        seen.append({lb["image"] for lb, _ in m.select("docker_registry_tag_digest_info")})
    assert seen[0] | seen[1] == set(refs) and not seen[0] & seen[1]
