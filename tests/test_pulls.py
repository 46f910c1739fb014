"""Pull counts: this host's event stream, Docker Hub, a Distribution registry, Harbor."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from exporter import config
from exporter.collectors.pulls import HarborCollector, HubCollector
from exporter.config import ConfigError, HarborInstance, redact_url
from exporter.sources import events as events_source
from exporter.sources import harbor as harbor_source
from exporter.sources import hub as hub_source
from exporter.sources import webhook as webhook_source
from exporter.sources.engine import Engine
from exporter.sources.events import EventStream
from exporter.sources.harbor import HarborReader
from exporter.sources.hub import HubAPI, HubReader
from exporter.sources.inventory import EngineReader
from exporter.sources.loop import Source
from exporter.sources.webhook import DistributionWebhook
from exporter.timestamps import parse_timestamp
from tests.registries import access_log, put_index
from tests.services import (
    EVERY_ENGINE,
    Dockerd,
    ExporterProcess,
    Podman,
    Registry,
    RootlessPodman,
    wait_for,
)
from tests.standins import DockerHub, Harbor, hub_tag
from tests.test_upstream import push_version

OFF = ("--upstream.mode", "off", "--hub.enabled", "false", "--collector.disk.interval", "1h")
SECRET = "Bearer s3cret-webhook"


def pulls(exp: ExporterProcess, repository: str) -> float:
    return exp.scrape().get("docker_image_pulls_total", repository=repository) or 0


@EVERY_ENGINE
def test_host_pulls_survive_a_daemon_restart(engine: Dockerd | Podman, registry: Registry,
                                             exporter_factory, tmp_path_factory) -> None:
    ref = f"{registry.address}/hygiene/pulled-{engine.name}:1"
    push_version(engine, ref, "pulled")
    repo = ref.rsplit(":", 1)[0]
    root = Path(tmp_path_factory.mktemp(f"pulls-{engine.name}", numbered=True))
    # A private engine of the same kind, to restart under the exporter.
    if isinstance(engine, RootlessPodman):
        host: Dockerd | Podman = RootlessPodman.create((registry.address,))
    elif isinstance(engine, Podman):
        host = Podman(root, (registry.address,))
    else:
        host = Dockerd(root)
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

@pytest.fixture(scope="module")
def hub_host(registry: Registry, tmp_path_factory) -> Iterator[Dockerd]:
    """A dockerd whose Docker Hub is the local registry (``--registry-mirror``), holding
    hygieneorg/puller:1.2.0 and :1.3.0 pulled "from Docker Hub" (docker.io RepoDigests), and
    next to them images named like Hub repositories that never came from there:
    mycorp/secret-app:1 (docker build), mycorp/secret-app:2 (a pulled image tagged again
    here) and hygiene-base:1 (docker import)."""
    host = Dockerd(Path(tmp_path_factory.mktemp("hub-mirror", numbered=True)),
                   args=("--registry-mirror", f"http://{registry.address}")).start()
    try:
        host.make_base_image("hygiene-base:1")
        for version in ("1.2.0", "1.3.0"):
            mirrored = f"{registry.address}/hygieneorg/puller:{version}"
            push_version(host, mirrored, f"puller {version}")
            host.cli("rmi", mirrored)
            host.cli("pull", f"hygieneorg/puller:{version}")
        host.build("mycorp/secret-app:1", "FROM hygiene-base:1\nCOPY s /s\n", {"s": "secret"})
        host.cli("tag", "hygieneorg/puller:1.3.0", "mycorp/secret-app:2")
        digests = host.cli("image", "inspect", "-f", "{{.RepoDigests}}",
                           "hygieneorg/puller:1.2.0", "mycorp/secret-app:1", "hygiene-base:1")
        assert digests.split("\n")[0].startswith("[hygieneorg/puller@sha256:"), digests
        assert digests.split("\n")[1:3] == ["[]", "[]"], digests
        yield host
    finally:
        host.stop()


HUB_REPOSITORIES = {"hygieneorg/puller": (1234, 5, "2026-11-01T10:00:00.123456Z"),
                    "grafana/grafana": (9_000_000_000, 7000, "2026-10-01T00:00:00Z"),
                    # Known to the stand-in, so a leak would show as a series too.
                    "mycorp/secret-app": (1, 0, "2026-01-01T00:00:00Z"),
                    "library/hygiene-base": (1, 0, "2026-01-01T00:00:00Z")}
HUB_TAGS = {"hygieneorg/puller": [hub_tag("1.2.0", "2026-01-01T00:00:00Z", [("linux", "amd64")]),
                                  hub_tag("1.3.0", "2026-03-01T00:00:00Z", [("linux", "amd64")])],
            "mycorp/secret-app": [hub_tag("1", "2026-01-01T00:00:00Z", [("linux", "amd64")]),
                                  hub_tag("2", "2026-01-01T00:00:00Z", [("linux", "amd64")])]}


def _named(requests, *names: str) -> set[str]:
    return {k for k in requests if any(n in k for n in names)}


def test_docker_hub_hears_only_of_what_was_pulled_from_it(hub_host: Dockerd,
                                                           exporter_factory) -> None:
    hub = DockerHub(dict(HUB_REPOSITORIES), tags=HUB_TAGS)
    try:
        exp = exporter_factory("--docker.host", hub_host.host, "--upstream.mode", "off",
                               "--hub.url", hub.url, "--hub.interval", "1s",
                               "--hub.repositories", "grafana/grafana")
        m = exp.wait_metrics(lambda m: m.get("docker_hub_repository_pulls_total",
                                             repository="hygieneorg/puller") == 1234
                             and m.get("docker_image_upstream_tag_last_pushed_timestamp_seconds",
                                       image="hygieneorg/puller:1.3.0") is not None)
        assert m.get("docker_hub_repository_stars", repository="hygieneorg/puller") == 5
        assert m.get("docker_hub_repository_last_updated_timestamp_seconds",
                     repository="hygieneorg/puller") == 1793527200.123456
        assert m.get("docker_hub_repository_pulls_total",
                     repository="grafana/grafana") == 9_000_000_000
        # A few more cycles, each of which could have asked about the local builds.
        reads = hub.requests["GET /v2/namespaces/hygieneorg/repositories/puller"]
        wait_for(lambda: hub.requests["GET /v2/namespaces/hygieneorg/repositories/puller"]
                 >= reads + 3, 15, "three more Hub cycles")
        assert not _named(hub.requests, "secret-app", "mycorp", "hygiene-base"), hub.requests
        assert set(hub.requests) == {
            "GET /v2/namespaces/hygieneorg/repositories/puller",
            "GET /v2/namespaces/grafana/repositories/grafana",
            "GET /v2/namespaces/hygieneorg/repositories/puller/tags/1.2.0",
            "GET /v2/namespaces/hygieneorg/repositories/puller/tags/1.3.0"}, hub.requests
        hub_series = [lb for name, lb, _ in exp.scrape().samples
                      if name.startswith(("docker_hub_", "docker_image_upstream_tag_"))]
        assert {lb.get("repository") or lb.get("image") for lb in hub_series} == {
            "hygieneorg/puller", "grafana/grafana", "hygieneorg/puller:1.2.0",
            "hygieneorg/puller:1.3.0"}

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


def test_docker_hub_is_not_asked_when_nothing_came_from_it(dockerd: Dockerd, exporter_factory,
                                                           tmp_path: Path) -> None:
    """Only local builds (and images from other registries): not one request, not even the
    login, and the hub source is healthy, not failing."""
    dockerd.build("mycorp/secret-app:1", "FROM hygiene-base:1\nCOPY s /s\n", {"s": "secret"})
    hub = DockerHub(dict(HUB_REPOSITORIES), login=("acme-bot", "dckr_pat_secret"),
                    tags=HUB_TAGS)
    (tmp_path / "pat").write_text("dckr_pat_secret\n")
    try:
        exp = exporter_factory("--docker.host", dockerd.host, "--upstream.mode", "off",
                               "--hub.url", hub.url, "--hub.interval", "1s",
                               "--hub.username", "acme-bot", "--hub.password-file",
                               str(tmp_path / "pat"))
        m = exp.wait_metrics(lambda m: m.get("docker_exporter_collector_success",
                                             collector="hub") == 1, what="hub healthy")
        first = m.get("docker_exporter_collector_last_success_timestamp_seconds",
                      collector="hub")
        assert first is not None
        m = exp.wait_metrics(lambda m: (m.get(
            "docker_exporter_collector_last_success_timestamp_seconds", collector="hub")
            or 0) >= first + 2, what="more Hub cycles")
        assert m.get("docker_exporter_collector_success", collector="hub") == 1
        assert not hub.requests, hub.requests
        assert m.select("docker_hub_repository_pulls_total") == []
        assert "source hub is failing" not in exp.log()
    finally:
        hub.stop()
        dockerd.cli("rmi", "mycorp/secret-app:1")


def test_docker_hub_pull_counter_never_goes_down(dockerd: Dockerd, exporter_factory) -> None:
    hub = DockerHub({"acme/tool": (1000, 3, "2026-11-01T00:00:00Z")})
    try:
        exp = exporter_factory("--docker.host", dockerd.host, "--upstream.mode", "off",
                               "--hub.url", hub.url, "--hub.interval", "1s",
                               "--hub.local-images", "false", "--hub.repositories", "acme/tool")
        exp.wait_metrics(lambda m: m.get("docker_hub_repository_pulls_total",
                                         repository="acme/tool") == 1000)
        hub.repositories["acme/tool"] = (900, 2, "2026-11-02T00:00:00Z")
        path = "GET /v2/namespaces/acme/repositories/tool"
        reads = hub.requests[path]
        m = exp.wait_metrics(lambda m: m.get("docker_hub_repository_stars",
                                             repository="acme/tool") == 2, what="a new read")
        wait_for(lambda: hub.requests[path] >= reads + 3, 15, "three reads of 900")
        m = exp.scrape()
        assert m.get("docker_hub_repository_pulls_total", repository="acme/tool") == 1000
        assert m.get("docker_hub_repository_stars", repository="acme/tool") == 2  # a gauge
        assert exp.log().count("fewer than the 1000") == 1, exp.log()
        hub.repositories["acme/tool"] = (1100, 2, "2026-11-02T00:00:00Z")
        exp.wait_metrics(lambda m: m.get("docker_hub_repository_pulls_total",
                                         repository="acme/tool") == 1100, what="higher again")
        assert exp.log().count("fewer than") == 1
    finally:
        hub.stop()


def test_docker_hub_caps_fold_into_other(hub_host: Dockerd, monkeypatch) -> None:
    """Past the caps, repositories fold into repository="_other" (pulls and stars summed,
    the latest update) and local tags into image="_other" (the latest push); no series is
    cut off, and _other never goes down either."""
    monkeypatch.setattr(hub_source, "MAX_REPOSITORIES", 2)
    monkeypatch.setattr(hub_source, "MAX_TAGS", 1)
    repos = {"acme/d": (40, 4, "2026-04-01T00:00:00Z"), "acme/c": (30, 3, "2026-05-01T00:00:00Z"),
             "acme/b": (20, 2, "2026-02-01T00:00:00Z"), "acme/a": (10, 1, "2026-01-01T00:00:00Z"),
             "hygieneorg/puller": (1234, 5, "2026-03-01T00:00:00Z")}
    hub = DockerHub(repos, tags=HUB_TAGS)
    engine = Engine(hub_host.host, 30)
    engine_source = Source("engine", EngineReader(engine).read, 60.0)
    api = HubAPI(hub.url, "", "")
    try:
        assert engine_source.refresh()
        reader = HubReader(api, ("acme/d", "acme/c", "acme/b", "acme/a"), True, engine_source)
        source = Source("hub", reader.read, 60.0)

        def series() -> dict[str, dict[str, float]]:
            assert source.refresh(), source.status
            out: dict[str, dict[str, float]] = {}
            for family in HubCollector(source, 60.0).collect():
                for sample in family.samples:
                    key = sample.labels.get("repository") or sample.labels["image"]
                    out.setdefault(sample.name, {})[key] = sample.value
            return out

        got = series()
        # Configured repositories first, in the order given: acme/d and acme/c keep theirs.
        assert got["docker_hub_repository_pulls_total"] == {
            "acme/d": 40, "acme/c": 30, "_other": 20 + 10 + 1234}
        assert got["docker_hub_repository_stars"] == {"acme/d": 4, "acme/c": 3,
                                                      "_other": 2 + 1 + 5}
        assert got["docker_hub_repository_last_updated_timestamp_seconds"]["_other"] == ts(
            "2026-03-01T00:00:00Z")
        assert got["docker_image_upstream_tag_last_pushed_timestamp_seconds"] == {
            "hygieneorg/puller:1.2.0": ts("2026-01-01T00:00:00Z"),
            "_other": ts("2026-03-01T00:00:00Z")}
        hub.repositories["acme/b"] = (5, 2, "2026-02-01T00:00:00Z")
        assert series()["docker_hub_repository_pulls_total"]["_other"] == 20 + 10 + 1234
        assert not _named(hub.requests, "secret-app", "mycorp", "hygiene-base")
    finally:
        api.close()
        engine.close()
        hub.stop()


def ts(text: str) -> float:
    value = parse_timestamp(text)
    assert value is not None
    return value


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
        shown = exp.log() + "".join(httpx.get(exp.url + path).text
                                    for path in ("/", "/config", "/status.json"))
        assert "dckr_pat_secret" not in shown and "acme-bot" in shown
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



def _harbor_config(tmp_path: Path, url: str, projects: str = "[team, infra]") -> Path:
    (tmp_path / "hpw").write_text("harbor-pass")
    cfg = tmp_path / "exporter.yml"
    cfg.write_text(f"harbor:\n  interval: 1s\n  instances:\n    - url: {url}\n"
                   "      username: robot$exporter\n"
                   f"      password_file: {tmp_path / 'hpw'}\n"
                   f"      projects: {projects}\n")
    return cfg


def test_harbor_pull_counter_never_goes_down(dockerd: Dockerd, exporter_factory,
                                             tmp_path: Path) -> None:
    harbor = Harbor({"team": {"app": 1000, "web": 5}}, login=("robot$exporter", "harbor-pass"))
    try:
        exp = exporter_factory("--docker.host", dockerd.host, *OFF, "--config.file",
                               str(_harbor_config(tmp_path, harbor.url, "[team]")))
        registry = f"127.0.0.1:{harbor.port}"

        def app(m) -> float | None:
            return m.get("docker_harbor_repository_pulls_total", registry=registry,
                         project="team", repository="app")
        exp.wait_metrics(lambda m: app(m) == 1000)
        harbor.projects["team"] = {"app": 900, "web": 6}
        path = "GET /api/v2.0/projects/team/repositories"
        reads = harbor.requests[path]
        exp.wait_metrics(lambda m: m.get("docker_harbor_repository_pulls_total",
                                         repository="web") == 6, what="a new read")
        wait_for(lambda: harbor.requests[path] >= reads + 3, 15, "three reads of 900")
        assert app(exp.scrape()) == 1000
        assert exp.log().count("fewer than the 1000") == 1, exp.log()
        harbor.projects["team"] = {"app": 1001, "web": 6}
        exp.wait_metrics(lambda m: app(m) == 1001, what="higher again")
        assert exp.log().count("fewer than") == 1
    finally:
        harbor.stop()


def test_harbor_cap_folds_into_other(monkeypatch) -> None:
    """Past MAX_SERIES, repositories fold into (registry, project, "_other") with their pulls
    summed, and that series never goes down either."""
    monkeypatch.setattr(harbor_source, "MAX_SERIES", 3)
    harbor = Harbor({"team": {f"svc{i}": 10 * i for i in range(1, 6)}, "infra": {"proxy": 7}},
                    login=("robot$exporter", "harbor-pass"))
    reader = HarborReader((HarborInstance(harbor.url, "robot$exporter", "harbor-pass",
                                          ("team", "infra")),))
    try:
        source = Source("harbor", reader.read, 60.0)

        def series() -> dict[tuple[str, str], float]:
            assert source.refresh(), source.status
            (family,) = HarborCollector(source, 60.0).collect()
            return {(s.labels["project"], s.labels["repository"]): s.value
                    for s in family.samples if s.name == "docker_harbor_repository_pulls_total"}

        assert series() == {("infra", "proxy"): 7, ("team", "svc1"): 10, ("team", "svc2"): 20,
                            ("team", "_other"): 30 + 40 + 50}
        harbor.projects["team"]["svc5"] = 0
        assert series()[("team", "_other")] == 120
    finally:
        reader.close()
        harbor.stop()


def test_event_and_webhook_caps_fold_into_other(monkeypatch) -> None:
    """The event stream and the Distribution webhook fold past their caps as well (summed)."""
    monkeypatch.setattr(events_source, "MAX_REPOSITORIES", 3)
    stream = EventStream("unix:///nonexistent.sock")  # fed directly: never connected
    for n, name in enumerate(["a/one", "a/two", "a/three", "a/four", "a/five", "a/four"]):
        assert stream.handle({"Type": "image", "Action": "pull", "id": f"{name}:1",
                              "Actor": {"ID": f"{name}:1", "Attributes": {"name": name}},
                              "time": 1_800_000_000 + n, "timeNano": (1_800_000_000 + n) * 10**9})
    assert dict(stream.counts()) == {"a/one": 1, "a/two": 1, "a/three": 1, "_other": 3}

    monkeypatch.setattr(webhook_source, "MAX_SERIES", 3)
    hook = DistributionWebhook(SECRET, {})
    events = [{"id": f"ev{n}", "timestamp": f"2026-11-28T04:21:{n:02d}Z", "action": "pull",
               "target": {"mediaType": "application/vnd.oci.image.manifest.v1+json",
                          "repository": repo, "digest": "sha256:" + "1" * 64},
               "request": {"addr": "10.0.0.9:5000", "host": "registry.internal",
                           "method": "GET"}}
              for n, repo in enumerate(["r1", "r2", "r3", "r4", "r5", "r1"])]
    code, _ = hook.handle(SECRET, "application/vnd.docker.distribution.events.v1+json",
                          json.dumps({"events": events}).encode())
    assert code == 200
    assert dict(hook.snapshot()[0]) == {("registry.internal", "r1"): 2,
                                        ("registry.internal", "r2"): 1,
                                        ("registry.internal", "r3"): 1,
                                        ("registry.internal", "_other"): 2}


def test_urls_with_user_info_are_never_shown(dockerd: Dockerd, exporter_factory,
                                             tmp_path: Path) -> None:
    """User-info in a Harbor or Hub URL is neither a label nor in the log or on the landing
    page; the Harbor registry label is host and port."""
    harbor = Harbor({"team": {"app": 3}}, login=("robot$exporter", "harbor-pass"))
    hub = DockerHub({"acme/tool": (5, 0, "2026-11-01T00:00:00Z")})
    try:
        url = f"http://urluser:urlsecret@127.0.0.1:{harbor.port}"
        cfg = _harbor_config(tmp_path, url, "[team, missing]")
        exp = exporter_factory("--docker.host", dockerd.host, *OFF[:2], "--config.file",
                               str(cfg), "--hub.url",
                               f"http://hubuser:hubsecret@127.0.0.1:{hub.port}",
                               "--hub.interval", "1s", "--hub.local-images", "false",
                               "--hub.repositories", "acme/tool")
        m = exp.wait_metrics(lambda m: m.select("docker_harbor_repository_pulls_total")
                             and m.get("docker_hub_repository_pulls_total",
                                       repository="acme/tool") == 5)
        assert m.select("docker_harbor_repository_pulls_total") == [
            ({"registry": f"127.0.0.1:{harbor.port}", "project": "team", "repository": "app"},
             3.0)]
        wait_for(lambda: "projects failed" in exp.log(), 10, "the missing project logged")
        page = httpx.get(exp.url + "/config").text
        assert f"http://&lt;masked&gt;@127.0.0.1:{harbor.port}" in page or \
            f"http://<masked>@127.0.0.1:{harbor.port}" in page, page
        for shown in (exp.log(), page, exp.scrape_text()):
            for secret in ("urluser", "urlsecret", "hubuser", "hubsecret"):
                assert secret not in shown
    finally:
        hub.stop()
        harbor.stop()


def test_url_errors_mask_user_info() -> None:
    with pytest.raises(ConfigError) as err:
        config.build({"hub.url": "ftp://someone:pa55word@hub.example.com"}, environ={})
    assert "pa55word" not in str(err.value) and "someone" not in str(err.value)
    assert redact_url("see https://u:p@ss@harbor:8443/api and http://plain/x?a=b@c") == (
        "see https://<masked>@harbor:8443/api and http://plain/x?a=b@c")
