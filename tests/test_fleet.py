"""Fleet mode: a central checker does one HEAD per distinct tag for every host."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.promql import ALERTS
from tests.registries import access_log
from tests.services import Dockerd, Prometheus, Registry, wait_for
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


def test_fleet_alert_fires_for_the_hosts_still_on_the_old_digest(
        registry: Registry, dockerd: Dockerd, exporter_factory, tmp_path: Path,
        tmp_path_factory) -> None:
    """Two hosts (two dockerds) in off mode, one central checker asking a real Prometheus."""
    rules = (ALERTS / "fleet.rules.yml").read_text()
    assert "> 7 * 86400" in rules and "keep_firing_for: 15m" in rules
    # No grace, so the alert fires at once; and no keep_firing_for: host b is drifted too for
    # the moment between the push and its pull, which would hold its alert for 15 minutes.
    (tmp_path / "fleet.rules.yml").write_text(
        rules.replace("> 7 * 86400", "> 0").replace("keep_firing_for: 15m", "keep_firing_for: 0s"))
    ref = f"{registry.address}/hygiene/fleet-e2e:1"
    push_version(dockerd, ref, "fleet one")
    other = Dockerd(Path(tmp_path_factory.mktemp("fleet-host-b", numbered=True))).start()
    hosts = {"a": dockerd, "b": other}
    try:
        for name, d in hosts.items():
            if name == "a":
                d.cli("rmi", ref)
            d.cli("pull", ref)
            d.cli("run", "-d", "--name", f"hygiene-fleet-{name}", "--network", "none", ref,
                  "/bin/busybox", "sleep", "3600")
        exporters = {name: exporter_factory("--docker.host", d.host, "--upstream.mode", "off",
                                            "--collector.engine.interval", "1s")
                     for name, d in hosts.items()}
        prom = Prometheus(tmp_path / "prometheus", [], [tmp_path / "fleet.rules.yml"])
        central = exporter_factory("--docker.host", f"unix://{tmp_path}/none.sock",
                                   "--upstream.mode", "central", "--upstream.prometheus-url",
                                   prom.url, "--upstream.interval", "2s",
                                   "--upstream.include", f"^{registry.address}/hygiene/fleet-e2e")
        prom.targets = [e.url.removeprefix("http://") for e in (*exporters.values(), central)]
        prom.start()
        try:
            instance = {n: e.url.removeprefix("http://") for n, e in exporters.items()}
            wait_for(lambda: prom.query(f'docker_registry_tag_digest_info{{image="{ref}"}}'),
                     60, "the checker to learn the tag from Prometheus and read its digest")
            time.sleep(3)
            assert prom.query(f'image:docker_fleet_drift{{image="{ref}"}}') == []

            # The tag moves on: host b pulls it again, host a does not.
            publish_elsewhere(dockerd, ref, "fleet two")
            other.cli("pull", ref)

            def firing() -> set[str]:
                alerts = prom.query('ALERTS{alertname="DockerHygieneFleetContainerDrifted",'
                                    'alertstate="firing"}')
                return {a["metric"]["instance"] for a in alerts
                        if a["metric"]["image"] == ref}

            wait_for(lambda: firing() == {instance["a"]}, 60, "the alert for host a only")
            time.sleep(3)
            assert firing() == {instance["a"]}
            m = central.scrape()
            assert m.get("docker_registry_requests_total", registry=registry.address,
                         method="HEAD", code="200") >= 2
        finally:
            prom.stop()
    finally:
        for name, d in hosts.items():
            d.cli("rm", "-f", f"hygiene-fleet-{name}", check=False)
        other.stop()
        dockerd.cli("pull", ref)
