"""Pull counts: this host's event stream, Docker Hub, a Distribution registry, Harbor."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import httpx
import pytest

from tests.registries import access_log, put_index
from tests.services import Dockerd, ExporterProcess, Podman, Registry, wait_for
from tests.standins import DockerHub, Harbor
from tests.test_upstream import push_version

OFF = ("--upstream.mode", "off", "--hub.enabled", "false", "--collector.disk.interval", "1h")
SECRET = "Bearer s3cret-webhook"


def pulls(exp: ExporterProcess, repository: str) -> float:
    return exp.scrape().get("docker_image_pulls_total", repository=repository) or 0


def test_host_pulls_survive_a_daemon_restart(engine: Dockerd | Podman, registry: Registry,
                                             exporter_factory, tmp_path_factory) -> None:
    ref = f"{registry.address}/hygiene/pulled-{engine.name}:1"
    push_version(engine, ref, "pulled")
    repo = ref.rsplit(":", 1)[0]
    root = Path(tmp_path_factory.mktemp(f"pulls-{engine.name}", numbered=True))
    # A private engine of the same kind, to restart under the exporter.
    host = Dockerd(root) if engine.name == "dockerd" else Podman(root, (registry.address,))
    host.start()
    try:
        exp = exporter_factory("--docker.host", host.host, *OFF)
        wait_for(lambda: exp.scrape().get("docker_exporter_collector_success",
                                          collector="events") == 1, 10, "events connected")
        for n in range(1, 4):
            host.pull(ref)
            if n < 3:
                host.cli("rmi", ref)
            wait_for(lambda n=n: pulls(exp, repo) == n, 10, f"{n} pulls counted")

        host.stop()
        m = exp.wait_metrics(lambda m: m.get("docker_exporter_collector_success",
                                             collector="events") == 0, what="disconnected")
        assert m.get("docker_image_pulls_total", repository=repo) == 3
        assert m.get("docker_up") is not None
        host.start()
        exp.wait_metrics(lambda m: m.get("docker_exporter_collector_success",
                                         collector="events") == 1, what="reconnected")
        # The reconnect asked for events since the last one counted: nothing counted twice.
        time.sleep(1)
        assert pulls(exp, repo) == 3
        host.pull(ref)  # already present: still a pull attempt, and an event
        wait_for(lambda: pulls(exp, repo) == 4, 10, "the pull after the restart")
        time.sleep(1)
        assert pulls(exp, repo) == 4
        log = exp.log()
        assert log.count("event stream disconnected") == 1, log
        assert log.count("event stream connected again") == 1, log
    finally:
        host.close()


def test_podman_pull_events_also_count_runs_and_failed_pulls(podman: Podman, registry: Registry,
                                                             exporter_factory) -> None:
    """What the docs say of Podman: its pull event also comes with every CLI run or create,
    of an image that is already here too (named as typed), and with a failed pull through the
    Docker-compatible API. Nothing in the event tells these from real pulls."""
    exp = exporter_factory("--docker.host", podman.host, *OFF)
    wait_for(lambda: exp.scrape().get("docker_exporter_collector_success",
                                      collector="events") == 1, 10, "events connected")
    podman.cli("run", "--rm", *podman.RUN, "hygiene-base:1", "/bin/busybox", "true")
    wait_for(lambda: pulls(exp, "hygiene-base") == 1, 10, "a run counted as a pull")

    missing = f"{registry.address}/hygiene/never-pushed"
    transport = httpx.HTTPTransport(uds=str(podman.socket))
    with httpx.Client(transport=transport, base_url="http://podman", timeout=30) as api:
        r = api.post("/v1.41/images/create", params={"fromImage": missing, "tag": "1"})
        assert "manifest unknown" in r.text
        # Creating a container through the API sends no pull event.
        r = api.post("/v1.41/containers/create", params={"name": "hygiene-api-created"},
                     json={"Image": podman.local("hygiene-base:1"), "Cmd": ["/bin/busybox"]})
        assert r.status_code == 201, r.text
    wait_for(lambda: pulls(exp, missing) == 1, 10, "a failed pull counted")
    time.sleep(1)
    assert pulls(exp, "localhost/hygiene-base") == 0
    assert pulls(exp, "hygiene-base") == 1
    podman.cli("rm", "hygiene-api-created")


# -- Distribution notifications ------------------------------------------------------------

@pytest.fixture
def notified(tmp_path: Path, exporter_factory, dockerd: Dockerd):
    """An exporter with the webhook on, and a registry that notifies it."""
    cfg = tmp_path / "exporter.yml"
    cfg.write_text(f'webhook:\n  distribution:\n    secret: "{SECRET}"\n')
    exp = exporter_factory("--docker.host", dockerd.host, *OFF, "--config.file", str(cfg),
                           "--events.enabled", "false")
    reg = Registry(tmp_path / "notifying-registry")
    reg.start("notifications:\n  endpoints:\n    - name: exporter\n"
              f"      url: {exp.url}/webhooks/distribution\n"
              f"      headers:\n        Authorization: [\"{SECRET}\"]\n"
              "      timeout: 2s\n      threshold: 3\n      backoff: 1s\n")
    yield exp, reg
    reg.stop()


def _registry_pulls(exp: ExporterProcess, registry: str, repository: str) -> float:
    return exp.scrape().get("docker_registry_pulls_total", registry=registry,
                            repository=repository) or 0


def _settle(read, expected: float, what: str) -> None:
    """Notifications arrive asynchronously: wait for the count, then make sure it stays."""
    wait_for(lambda: read() == expected, 15, what)
    time.sleep(1.5)
    assert read() == expected, what


def test_distribution_pull_definition(notified, dockerd: Dockerd) -> None:
    exp, reg = notified
    addr = reg.address
    ref = f"{addr}/team/app:1"
    push_version(dockerd, ref, "notified one")
    _settle(lambda: exp.scrape().get("docker_registry_pushes_total", registry=addr,
                                     repository="team/app"), 1, "one manifest push")
    assert _registry_pulls(exp, addr, "team/app") == 0  # blob HEADs of the push are no pulls

    v2 = "application/vnd.docker.distribution.manifest.v2+json"
    by_tag = httpx.get(f"http://{addr}/v2/team/app/manifests/1", headers={"Accept": v2})
    digest = "sha256:" + hashlib.sha256(by_tag.content).hexdigest()
    httpx.get(f"http://{addr}/v2/team/app/manifests/{digest}", headers={"Accept": v2})
    httpx.head(f"http://{addr}/v2/team/app/manifests/1", headers={"Accept": v2})
    config = by_tag.json()["config"]["digest"]
    httpx.get(f"http://{addr}/v2/team/app/blobs/{config}")  # a blob: not a pull
    _settle(lambda: _registry_pulls(exp, addr, "team/app"), 2, "GET by tag + GET by digest")

    # An index GET and the GET of its platform manifest from the same client: one pull.
    push_version(dockerd, f"{addr}/team/multi:amd64", "amd64")
    push_version(dockerd, f"{addr}/team/multi:arm64", "arm64")
    put_index(addr, "team/multi", "latest", [("amd64", "amd64"), ("arm64", "arm64")])
    time.sleep(1.5)  # put_index reads the platform manifests: those GETs are pulls too
    base = _registry_pulls(exp, addr, "team/multi")
    assert base == 2
    index = httpx.get(f"http://{addr}/v2/team/multi/manifests/latest", headers={
        "Accept": "application/vnd.docker.distribution.manifest.list.v2+json"}).json()
    httpx.get(f"http://{addr}/v2/team/multi/manifests/{index['manifests'][0]['digest']}",
              headers={"Accept": v2})
    _settle(lambda: _registry_pulls(exp, addr, "team/multi"), base + 1, "index pull = 1")

    # Real docker pulls: HEAD by tag, then GET by digest when the manifest is missing. The
    # count must equal the manifest GETs docker actually sent, as the registry logged them.
    before = access_log(reg, user_agent="docker/")
    dockerd.cli("rmi", ref)
    dockerd.cli("pull", ref)
    dockerd.cli("pull", ref)  # up to date: HEAD only
    gets = (access_log(reg, user_agent="docker/") - before)[("GET", "manifest")]
    assert gets >= 1
    _settle(lambda: _registry_pulls(exp, addr, "team/app"), 2 + gets, "docker pulls")


def test_webhook_rejects_bad_requests_without_touching_counters(notified) -> None:
    exp, _registry = notified
    url = f"{exp.url}/webhooks/distribution"
    event = json.loads((Path(__file__).parent / "fixtures" /
                        "distribution-notifications.json").read_text())
    ctype = {"Content-Type": "application/vnd.docker.distribution.events.v1+json"}
    ok = httpx.post(url, content=json.dumps(event), headers={**ctype, "Authorization": SECRET})
    assert ok.status_code == 200
    counted = exp.scrape().get("docker_registry_pulls_total", registry="127.0.0.1:5055",
                               repository="app")
    assert counted == 4
    # Redelivery of the same events (same ids) counts nothing.
    assert httpx.post(url, content=json.dumps(event),
                      headers={**ctype, "Authorization": SECRET}).status_code == 200
    bad = [
        (401, {**ctype, "Authorization": "Bearer wrong"}, json.dumps(event).encode()),
        (401, ctype, json.dumps(event).encode()),
        (400, {**ctype, "Authorization": SECRET}, b"{not json"),
        (400, {**ctype, "Authorization": SECRET}, b'{"events": "nope"}'),
        (400, {**ctype, "Authorization": SECRET}, b"[" * 100000 + b"]" * 100000),
        (415, {"Content-Type": "text/plain", "Authorization": SECRET}, b"{}"),
        (413, {**ctype, "Authorization": SECRET}, b"x" * (10 * 1024 * 1024)),
    ]
    for code, headers, body in bad:
        try:
            r = httpx.post(url, content=body, headers=headers, timeout=10)
            assert r.status_code == code, (code, r.status_code, r.text)
        except httpx.RemoteProtocolError:
            assert code == 413  # the server may close before reading all 10 MB
    m = exp.scrape()
    assert m.get("docker_registry_pulls_total", registry="127.0.0.1:5055", repository="app") == 4
    assert m.get("docker_registry_pushes_total", registry="127.0.0.1:5055", repository="app") == 2
    assert m.get("docker_exporter_webhook_requests_total", code="401") == 2
    assert m.get("docker_exporter_webhook_requests_total", code="400") == 3
    assert m.get("docker_up") == 1


def test_webhook_is_off_without_a_secret(dockerd: Dockerd, exporter_factory) -> None:
    exp = exporter_factory("--docker.host", dockerd.host, *OFF)
    r = httpx.post(f"{exp.url}/webhooks/distribution", content=b"{}",
                   headers={"Content-Type": "application/json"})
    assert r.status_code == 405
    assert "docker_registry_pulls_total" not in exp.scrape_text()


# -- Docker Hub -------------------------------------------------------------------------------

def test_docker_hub_counts_for_configured_and_local_repositories(dockerd: Dockerd,
                                                                 exporter_factory) -> None:
    hub = DockerHub({"library/hygiene-base": (1234, 5, "2026-11-01T10:00:00.123456Z"),
                     "grafana/grafana": (9_000_000_000, 7000, "2026-10-01T00:00:00Z")})
    try:
        exp = exporter_factory("--docker.host", dockerd.host, "--upstream.mode", "off",
                               "--hub.url", hub.url, "--hub.interval", "1s",
                               "--hub.repositories", "grafana/grafana")
        m = exp.wait_metrics(lambda m: m.get("docker_hub_repository_pulls_total",
                                             repository="grafana/grafana") is not None)
        m = exp.wait_metrics(lambda m: m.get("docker_hub_repository_pulls_total",
                                             repository="library/hygiene-base") == 1234)
        assert m.get("docker_hub_repository_stars", repository="library/hygiene-base") == 5
        assert m.get("docker_hub_repository_last_updated_timestamp_seconds",
                     repository="library/hygiene-base") == 1793527200.123456
        assert m.get("docker_hub_repository_pulls_total",
                     repository="grafana/grafana") == 9_000_000_000
        # Local images from other registries are not Hub repositories.
        asked = {k for k in hub.requests if k.startswith("GET ")}
        assert all(k.startswith("GET /v2/namespaces/") for k in asked)
        assert not any("127.0.0.1" in k for k in asked)

        # 429: the last values stay, the collector says it failed, nothing more is asked
        # until Retry-After has passed.
        hub.rate_limited = {"Retry-After": "120"}
        m = exp.wait_metrics(lambda m: m.get("docker_exporter_collector_success",
                                             collector="hub") == 0, what="hub failing")
        sent = sum(hub.requests.values())
        time.sleep(3)
        assert sum(hub.requests.values()) == sent
        m = exp.scrape()
        assert m.get("docker_hub_repository_pulls_total", repository="grafana/grafana") == 9e9
    finally:
        hub.stop()


def test_docker_hub_credentials(dockerd: Dockerd, exporter_factory, tmp_path: Path) -> None:
    hub = DockerHub({"acme/private": (3, 0, "2026-11-01T00:00:00Z")},
                    login=("acme-bot", "dckr_pat_secret"))
    (tmp_path / "pat").write_text("dckr_pat_secret\n")
    try:
        exp = exporter_factory("--docker.host", dockerd.host, "--upstream.mode", "off",
                               "--hub.url", hub.url, "--hub.local-images", "false",
                               "--hub.repositories", "acme/private", "--hub.username",
                               "acme-bot", "--hub.password-file", str(tmp_path / "pat"))
        exp.wait_metrics(lambda m: m.get("docker_hub_repository_pulls_total",
                                         repository="acme/private") == 3)
        assert hub.requests["POST /v2/auth/token"] >= 1
        assert "dckr_pat_secret" not in exp.log() + httpx.get(exp.url + "/").text
    finally:
        hub.stop()


# -- Harbor -----------------------------------------------------------------------------------

def test_harbor_pull_counts_across_pages(dockerd: Dockerd, exporter_factory,
                                         tmp_path: Path) -> None:
    projects = {"team": {f"svc{i:03d}": i * 10 for i in range(250)},
                "infra": {"proxy": 77}}
    harbor = Harbor(projects, login=("robot$exporter", "harbor-pass"))
    (tmp_path / "hpw").write_text("harbor-pass")
    cfg = tmp_path / "exporter.yml"
    cfg.write_text(f"harbor:\n  interval: 1s\n  instances:\n    - url: {harbor.url}\n"
                   "      username: robot$exporter\n"
                   f"      password_file: {tmp_path / 'hpw'}\n"
                   "      projects: [team, infra]\n")
    try:
        exp = exporter_factory("--docker.host", dockerd.host, *OFF, "--config.file", str(cfg))
        registry = f"127.0.0.1:{harbor.port}"
        m = exp.wait_metrics(lambda m: len(m.select("docker_harbor_repository_pulls_total"))
                             == 251, what="every repository of both projects")
        assert m.get("docker_harbor_repository_pulls_total", registry=registry,
                     project="team", repository="svc249") == 2490
        assert m.get("docker_harbor_repository_pulls_total", registry=registry,
                     project="infra", repository="proxy") == 77
        assert harbor.requests["GET /api/v2.0/projects/team/repositories"] % 3 == 0
        harbor.rate_limited = {"Retry-After": "30"}
        m = exp.wait_metrics(lambda m: m.get("docker_exporter_collector_success",
                                             collector="harbor") == 0, what="harbor failing")
        assert len(m.select("docker_harbor_repository_pulls_total")) == 251
    finally:
        harbor.stop()

