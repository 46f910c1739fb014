"""The deployment examples in deploy/: what they promise about access to the engine holds.

compose.yml cannot be started here (its images come from Docker Hub), so its structure is
checked: the socket reaches the proxy only, read-only, and the proxy allows only what the
exporter reads. The systemd unit goes through `systemd-analyze verify`; the Prometheus
configuration through promtool; the example configuration through the exporter itself.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.services import ROOT, need

DEPLOY = ROOT / "deploy"
# Every API section docker-socket-proxy knows, and the ones the exporter needs.
PROXY_SECTIONS = {
    "ALLOW_ATTACH", "ALLOW_ARCHIVE", "ALLOW_DELETE", "ALLOW_EXEC", "ALLOW_EXPORT",
    "ALLOW_KILL", "ALLOW_LOGS", "ALLOW_PAUSE", "ALLOW_RESTARTS", "ALLOW_START", "ALLOW_STOP",
    "ALLOW_UNPAUSE", "AUTH", "BUILD", "COMMIT", "CONFIGS", "CONTAINERS", "DELETE",
    "DISTRIBUTION", "EVENTS", "EXEC", "GRPC", "IMAGES", "INFO", "NETWORKS", "NODES", "PATCH",
    "PING", "PLUGINS", "POST", "PUT", "SECRETS", "SERVICES", "SESSION", "SWARM", "SYSTEM",
    "TASKS", "VERSION", "VOLUMES",
}
NEEDED_SECTIONS = {"IMAGES", "CONTAINERS", "SYSTEM", "EVENTS", "INFO", "VERSION"}
UNIT = DEPLOY / "docker-hygiene-exporter.service"
EXEC_START = ("/opt/docker-hygiene-exporter/bin/docker-hygiene-exporter "
              "--config.file /etc/docker-hygiene-exporter/config.yml")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "compose.yml").read_text())


def mounts(service: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(source, target, mode) of each short-syntax volume."""
    out = []
    for volume in service.get("volumes", []):
        assert isinstance(volume, str), f"use the short volume syntax: {volume!r}"
        source, target, *mode = volume.split(":")
        out.append((source, target, mode[0] if mode else "rw"))
    return out


def host_path(source: str) -> Path | None:
    """A bind mount's source on the host (relative to deploy/), None for a named volume."""
    return (DEPLOY / source).resolve() if source.startswith((".", "/")) else None


def test_compose_has_the_stack(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {"socket-proxy", "exporter", "prometheus",
                                        "alertmanager", "grafana"}
    for name, service in compose["services"].items():
        for source, _, _ in mounts(service):
            path = host_path(source)
            if path is not None and not source.startswith("/var/run/"):
                assert path.exists(), f"{name} mounts {source}, which is not in the repository"
            elif path is None:
                assert source in compose["volumes"], f"{name}: undeclared volume {source}"


def test_only_the_proxy_sees_the_docker_socket(compose: dict[str, Any]) -> None:
    holders = {name: mode for name, service in compose["services"].items()
               for source, _, mode in mounts(service) if "docker.sock" in source}
    assert holders == {"socket-proxy": "ro"}
    for name, service in compose["services"].items():
        assert not service.get("privileged"), name
        assert "DOCKER_HOST" not in service.get("environment", {}) or name == "exporter"


def test_proxy_is_read_only_and_allows_only_what_the_exporter_reads(
        compose: dict[str, Any]) -> None:
    proxy = compose["services"]["socket-proxy"]
    env = {k: str(v) for k, v in proxy["environment"].items()}
    assert set(env) <= PROXY_SECTIONS, set(env) - PROXY_SECTIONS
    assert env["POST"] == "0"
    assert {k for k, v in env.items() if v == "1"} == NEEDED_SECTIONS
    assert "ports" not in proxy, "the proxy must not be published on the host"
    assert proxy["read_only"] is True and proxy["cap_drop"] == ["ALL"]
    # Its network is shared with the exporter only, and has no route out.
    assert proxy["networks"] == ["docker-api"]
    assert compose["networks"]["docker-api"]["internal"] is True
    on_api = {n for n, s in compose["services"].items() if "docker-api" in s.get("networks", [])}
    assert on_api == {"socket-proxy", "exporter"}


def test_exporter_container_is_read_only_non_root_and_uses_the_proxy(
        compose: dict[str, Any]) -> None:
    exporter = compose["services"]["exporter"]
    assert exporter["read_only"] is True
    uid = str(exporter["user"]).split(":")[0]
    assert uid.isdigit() and int(uid) != 0
    assert exporter["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in exporter["security_opt"]
    assert exporter["environment"]["DOCKER_HOST"] == "tcp://socket-proxy:2375"
    assert exporter["depends_on"] == ["socket-proxy"]
    targets = {target for _, target, _ in mounts(exporter)}
    assert targets == {"/var/lib/docker-hygiene-exporter"}  # the state volume, nothing else
    context = host_path(exporter["build"]["context"])
    assert (context / exporter["build"]["dockerfile"]).is_file()
    assert (context / "pyproject.toml").is_file()


def test_prometheus_loads_the_rules_and_scrapes_the_exporter(compose: dict[str, Any]) -> None:
    prometheus = compose["services"]["prometheus"]
    by_target = {target: source for source, target, _ in mounts(prometheus)}
    config_path = host_path(by_target["/etc/prometheus/prometheus.yml"])
    proc = subprocess.run([need("promtool"), "check", "config", str(config_path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    config = yaml.safe_load(config_path.read_text())
    # Each rule_files glob, seen from the host through its mount, finds rule files.
    for pattern in config["rule_files"]:
        directory, _, glob = pattern.rpartition("/")
        source = host_path(by_target[directory])
        assert source == (ROOT / "alerts").resolve()
        assert list(source.glob(glob)), f"{pattern} matches nothing in alerts/"
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    exporter_jobs = [j for name, j in jobs.items() if re.fullmatch(r".*docker-hygiene.*", name)]
    assert len(exporter_jobs) == 1, "the alert rules select job=~\".*docker-hygiene.*\""
    targets = exporter_jobs[0]["static_configs"][0]["targets"]
    assert targets == ["exporter:10221"]
    assert config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == [
        "alertmanager:9093"]


def test_grafana_provisions_the_dashboards_and_the_compose_prometheus(
        compose: dict[str, Any]) -> None:
    grafana = compose["services"]["grafana"]
    by_target = {target: source for source, target, _ in mounts(grafana)}
    providers = host_path(by_target["/etc/grafana/provisioning/dashboards"])
    paths = {p["options"]["path"] for f in providers.glob("*.yml")
             for p in yaml.safe_load(f.read_text())["providers"]}
    assert paths, "no dashboard provider in dashboards/provisioning/dashboards"
    for path in paths:
        dashboards = host_path(by_target[path])
        assert list(dashboards.glob("*.json")), f"{path} gets no dashboards"
    datasources = yaml.safe_load(host_path(by_target[
        "/etc/grafana/provisioning/datasources/docker-hygiene.yml"]).read_text())["datasources"]
    assert [d["url"] for d in datasources] == ["http://prometheus:9090"]


def test_example_config_is_valid() -> None:
    proc = subprocess.run([sys.executable, "-m", "exporter", "check-config",
                           str(DEPLOY / "config.yml")], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr


def unit_entries(text: str) -> list[tuple[str, str, str]]:
    """(section, key, value) in order; systemd keys may repeat, so no configparser."""
    entries, section = [], ""
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        entries.append((section, key, value))
    return entries


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    """systemd-analyze verify, with ExecStart pointed at this checkout's entry point.

    verify insists that ExecStart exists; nothing else in the unit is changed. Any output
    (an unknown key, a value it cannot parse) fails, not just a non-zero exit.
    """
    text = UNIT.read_text()
    assert f"ExecStart={EXEC_START}\n" in text
    entry_point = Path(sys.executable).with_name("docker-hygiene-exporter")
    assert entry_point.exists(), entry_point
    copy = tmp_path / UNIT.name
    copy.write_text(text.replace(f"ExecStart={EXEC_START.split()[0]}",
                                 f"ExecStart={entry_point}"))
    proc = subprocess.run([need("systemd-analyze"), "verify", "--man=no", "--generators=no",
                           str(copy)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and not (proc.stdout + proc.stderr).strip(), (
        proc.stdout + proc.stderr)


def test_systemd_unit_is_hardened() -> None:
    entries = unit_entries(UNIT.read_text())
    service = {}
    for section, key, value in entries:
        if section == "Service":
            service.setdefault(key, []).append(value)
    single = {k: v[-1] for k, v in service.items()}
    assert single["DynamicUser"] == "yes" and single["SupplementaryGroups"] == "docker"
    assert single["StateDirectory"] == "docker-hygiene-exporter"  # sets $STATE_DIRECTORY
    for key in ("NoNewPrivileges", "ProtectHome", "PrivateTmp", "PrivateDevices",
                "ProtectKernelTunables", "ProtectKernelModules", "ProtectControlGroups",
                "RestrictNamespaces", "RestrictSUIDSGID", "LockPersonality"):
        assert single[key] == "yes", key
    assert single["ProtectSystem"] == "strict"
    assert single["CapabilityBoundingSet"] == ""
    assert set(single["RestrictAddressFamilies"].split()) == {"AF_UNIX", "AF_INET", "AF_INET6"}
    assert "ReadWritePaths" not in single  # the state directory is the only writable place
