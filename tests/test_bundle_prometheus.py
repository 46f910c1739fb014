"""The shipped rules and dashboards against a real Prometheus scraping the real exporter.

The exporter watches the private dockerd and local registries holding real state: an image
built in 2019 that a container runs, a tag that drifted upstream, a container left stale by
a pull, dangling images and build cache, a registry close to its rate limit and one that
answers 429, and pulls seen by the engine, a registry's notifications, Docker Hub and Harbor
(the last two are local stand-ins for their HTTP APIs: no traffic leaves the host).
Prometheus (the Debian package) loads the rule files and scrapes every second. Then every
rule and dashboard query must run without error, every recording rule and every dashboard
panel must return data (but for panels that only ever list problems), and the alerts that
this state should trigger must be pending or firing, and others not.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.containerd import Containerd, push_busybox
from tests.images import load_old_image
from tests.promql import dashboards, rule_files, scan, substitute, targets
from tests.registries import FaultProxy, access_log, get_manifest, push_variant
from tests.services import Dockerd, ExporterProcess, Prometheus, Registry, wait_for
from tests.standins import DockerHub, Harbor
from tests.test_upstream import publish_elsewhere, push_version

JOB = "docker-hygiene"
SECRET = "Bearer bundle-test-secret"
# Panels that only ever show a problem: empty when all is well, which the state built here
# cannot make otherwise without breaking the exporter.
PROBLEM_ONLY_PANELS = {("fleet.json", "Collectors failing")}
# Panels of Kubernetes nodes running containerd (the kubelet's view of the image filesystem):
# empty on a Docker host; test_dashboards_on_a_containerd_node shows them with data.
CONTAINERD_ONLY_PANELS = {
    ("host-overview.json", "Image filesystem (containerd nodes)"),
    ("host-overview.json", "Image filesystem use (containerd nodes)"),
    ("fleet.json", "Image filesystem per node (containerd nodes)"),
}
# ... and panels that read only docker system df's view, which a containerd node lacks.
DOCKER_DF_PANELS = {
    ("host-overview.json", "Disk used by Docker"), ("host-overview.json", "Reclaimable"),
    ("host-overview.json", "Disk usage by kind"), ("host-overview.json", "Reclaimable by kind"),
    ("fleet.json", "Disk used by Docker"), ("fleet.json", "Reclaimable"),
    ("fleet.json", "Hosts wasting most disk"), ("fleet.json", "Docker disk per host"),
}


def run_container(d: Dockerd, name: str, image: str) -> None:
    d.cli("run", "-d", "--name", name, "--network", "none", image,
          "/bin/busybox", "sleep", "3600")


@pytest.fixture
def fakes() -> Iterator[tuple[DockerHub, Harbor]]:
    """Docker Hub and Harbor stand-ins whose pull counts grow with every read."""
    hub = DockerHub({"hygiene/app": (1000, 42, "2024-05-01T12:00:00.000000Z")}, grow=7)
    harbor = Harbor({"team": {"app": 50}}, login=("robot", "pw"), grow=3)
    yield hub, harbor
    hub.stop()
    harbor.stop()


@pytest.fixture
def started(tmp_path: Path) -> Iterator[Callable[[Any], Any]]:
    """Services this test starts itself, stopped at the end whatever happens."""
    services: list[Any] = []

    def track(service: Any) -> Any:
        services.append(service)
        return service

    yield track
    for service in reversed(services):
        service.stop()


def wait_query(prom: Prometheus, expr: str, what: str, timeout: float = 45) -> list[dict]:
    return wait_for(lambda: prom.query(expr), timeout, what, interval=0.5)


def test_rules_and_dashboards_on_a_real_prometheus(
        dockerd: Dockerd, registry: Registry, exporter_factory, fakes: tuple[DockerHub, Harbor],
        started, tmp_path: Path) -> None:
    d = dockerd
    reg = registry.address
    containers = ["hygiene-bundle-old", "hygiene-bundle-drift", "hygiene-bundle-stale"]
    images: list[str] = []  # removed at the end: the dockerd is shared with other tests
    try:
        # -- state on the host, before the exporter starts ---------------------------------
        images.append(load_old_image(d, "hygiene-bundle-old:2019", "2019-03-01T00:00:00Z",
                                     tmp_path))
        run_container(d, "hygiene-bundle-old", "hygiene-bundle-old:2019")
        drift_ref, stale_ref = f"{reg}/hygiene/bundle-drift:1", f"{reg}/hygiene/bundle-stale:1"
        for ref, name in ((drift_ref, "hygiene-bundle-drift"),
                          (stale_ref, "hygiene-bundle-stale")):
            images.append(push_version(d, ref, f"{name} one"))
            d.cli("rmi", ref)
            d.cli("pull", ref)
            run_container(d, name, ref)
        # Version 2 of the drifted image, released long ago: a newer version not deployed.
        base = get_manifest(reg, "hygiene/bundle-drift", "1")
        push_variant(reg, "hygiene/bundle-drift", "2", base, "2026-01-01T00:00:00Z", d.arch())
        # Two registries behind proxies: one nearly out of quota, one refusing with 429.
        limited = started(FaultProxy(registry.port).start())
        limited.response_headers = {"ratelimit-limit": "100;w=21600",
                                    "ratelimit-remaining": "4;w=21600"}
        limited_ref = f"{limited.address}/hygiene/bundle-limited:1"
        images.append(push_version(d, limited_ref, "limited"))
        refusing = started(FaultProxy(registry.port).start())
        refused_ref = f"{refusing.address}/hygiene/bundle-refused:1"
        images.append(push_version(d, refused_ref, "refused"))
        refusing.mode, refusing.status, refusing.headers = "status", 429, {"Retry-After": "1"}
        # A tag built twice leaves the first build dangling.
        for content in ("dangling one", "dangling two"):
            images.append(d.build("hygiene-bundle-dangle:1", "FROM hygiene-base:1\nCOPY v /v\n",
                                  {"v": content}))

        # -- the exporter, a registry that notifies it, Prometheus ---------------------------
        notifying = Registry(tmp_path / "notifying-registry")
        config = tmp_path / "exporter.yml"
        config.write_text(yaml.safe_dump({
            "harbor": {"interval": "1s", "instances": [
                {"url": fakes[1].url, "username": "robot", "password": "pw",
                 "projects": ["team"]}]},
            "webhook": {"distribution": {"secret": SECRET}},
        }))
        include = "|".join(a.replace(".", r"\.") for a in (
            reg, limited.address, refusing.address, notifying.address))
        exp: ExporterProcess = exporter_factory(
            "--docker.host", d.host, "--config.file", str(config),
            "--docker.config", str(tmp_path / "no-docker-config.json"),
            "--hub.enabled", "true", "--hub.url", fakes[0].url, "--hub.interval", "1s",
            "--hub.repositories", "hygiene/app", "--hub.local-images", "false",
            "--collector.engine.interval", "1s", "--collector.disk.interval", "1s",
            "--upstream.interval", "2s", "--upstream.include", f"^({include})/hygiene/bundle-",
            "--versions.pin", "none")  # bundle-drift:1 -> 2 is a new major version
        started(notifying).start(
            "notifications:\n  endpoints:\n    - name: hygiene-exporter\n"
            f"      url: {exp.url}/webhooks/distribution\n"
            f"      headers:\n        Authorization: [\"{SECRET}\"]\n"
            "      timeout: 2s\n      threshold: 3\n      backoff: 1s\n")
        prom = started(Prometheus(tmp_path / "prometheus", [exp.url.removeprefix("http://")],
                                  rule_files())).start()
        instance = exp.url.removeprefix("http://")

        # -- what happens while they watch -------------------------------------------------
        images.append(publish_elsewhere(d, drift_ref, "drift two"))  # the registry moves on
        images.append(publish_elsewhere(d, stale_ref, "stale two"))
        d.cli("pull", stale_ref)  # pulled, container not recreated: stale
        pulled_ref = f"{notifying.address}/hygiene/bundle-pulled:1"
        images.append(push_version(d, pulled_ref, "pulled"))
        for _ in range(2):
            d.cli("rmi", pulled_ref)
            d.cli("pull", pulled_ref)

        # -- wait until Prometheus has seen all of it, twice for rates -----------------------
        sel = f'job="{JOB}", instance="{instance}"'
        for expr, what in (
                (f'container:docker_upstream_drift_age_seconds{{{sel}, '
                 'container="hygiene-bundle-drift"}', "the drifted container recorded"),
                (f'container:docker_image_stale_age_seconds{{{sel}, '
                 'container="hygiene-bundle-stale"}', "the stale container recorded"),
                (f'docker_registry_ratelimit_remaining{{{sel}, registry="{limited.address}"}}',
                 "the rate-limit headers"),
                (f'increase(docker_registry_requests_total{{{sel}, code="429"}}[1m]) > 0',
                 "repeated 429 answers"),
                (f'docker_images_dangling{{{sel}}} > 0', "a dangling image"),
                (f'container:docker_newer_version_age_seconds{{{sel}, '
                 'container="hygiene-bundle-drift"}', "the newer version recorded"),
        ):
            wait_query(prom, expr, what)
        # Pull counters: there, then rising (the engine's and the registry's with one more
        # pull, Docker Hub's and Harbor's stand-ins with every read).
        failures: list[str] = []
        missing: set[str] = set()
        for metric in ("docker_image_pulls_total", "docker_registry_pulls_total",
                       "docker_registry_pushes_total", "docker_hub_repository_pulls_total",
                       "docker_harbor_repository_pulls_total"):
            try:
                wait_query(prom, f"count_over_time({metric}{{{sel}}}[1m]) >= 2",
                           f"{metric} scraped", 20)
            except TimeoutError:
                missing.add(metric)
                failures.append(f"{metric} is not exported: the pull-count source it comes "
                                f"from is missing or broken; exporter log:\n{exp.log()[-1500:]}")
        d.cli("rmi", pulled_ref)
        d.cli("pull", pulled_ref)
        # dockerd may skip the manifest GET when it still holds the manifest, and only GETs
        # count as registry pulls: another client pulls the manifest as well.
        httpx.get(f"http://{notifying.address}/v2/hygiene/bundle-pulled/manifests/1",
                  headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
                  timeout=10).raise_for_status()
        for metric in ("docker_image_pulls_total", "docker_registry_pulls_total",
                       "docker_hub_repository_pulls_total",
                       "docker_harbor_repository_pulls_total"):
            if metric in missing:
                continue
            try:
                wait_query(prom, f"increase({metric}{{{sel}}}[1m]) > 0", f"{metric} rising", 20)
            except TimeoutError:
                failures.append(f"{metric} does not rise after pulls: "
                                f"{exp.scrape().select(metric)}; docker's requests to the "
                                f"notifying registry {access_log(notifying, 'docker/')}")
        time.sleep(2)  # one more evaluation of every rule on complete data

        # -- every rule expression runs; every recording rule records ------------------------
        for f in rule_files():
            for group in yaml.safe_load(f.read_text())["groups"]:
                for rule in group["rules"]:
                    name = rule.get("alert") or rule["record"]
                    try:
                        prom.query(rule["expr"])
                    except AssertionError as exc:
                        failures.append(f"{f.name} {name}: {exc}")
        recorded = {
            "instance:docker_disk_usage_bytes:sum": "",
            "instance:docker_disk_reclaimable_bytes:sum": "",
            "container:docker_upstream_drift_age_seconds": ', container="hygiene-bundle-drift"',
            "container:docker_image_stale_age_seconds": ', container="hygiene-bundle-stale"',
            "container:docker_image_age_seconds": ', container="hygiene-bundle-old"',
            "container:docker_newer_version_age_seconds": ', container="hygiene-bundle-drift"',
            "container:docker_upstream_update_age_seconds":
                ', container="hygiene-bundle-drift"',
            # The refused tag: unknown since it was tagged here (12 h before it alerts).
            "image:docker_upstream_unknown_age_seconds": f', image="{refused_ref}"',
        }
        for name, extra in recorded.items():
            if not prom.query(f"{name}{{{sel}{extra}}}"):
                failures.append(f"recording rule {name}{{{extra.lstrip(', ')}}} has no data")
        for source in ("host", "distribution", "docker_hub", "harbor"):
            if not prom.query(f'repository:docker_pulls:rate1h{{{sel}, source="{source}"}}'):
                failures.append(f"repository:docker_pulls:rate1h{{source={source!r}}} has no "
                                "data")
        old = prom.query(f'container:docker_image_age_seconds{{{sel}, '
                         'container="hygiene-bundle-old"}')
        if old and float(old[0]["value"][1]) < 5 * 365 * 86400:
            failures.append(f"the 2019 image is only {old[0]['value'][1]}s old")

        # -- every dashboard query runs; the host overview and registry panels have data ------
        queried = 0
        for name, dashboard in dashboards().items():
            for t in targets(name, dashboard):
                expr = substitute(t.expr, job=JOB, instance=instance.replace(".", r"\\."))
                queried += 1
                try:
                    result = prom.query(expr)
                except AssertionError as exc:
                    failures.append(f"{name} / {t.panel} / {t.ref}: {exc}")
                    continue
                if result or (name, t.panel) in PROBLEM_ONLY_PANELS | CONTAINERD_ONLY_PANELS:
                    continue
                absent = [s.name for s in scan(t.expr)[0]
                          if not prom.query(f'count({{__name__="{s.name}"}})')]
                failures.append(f"{name} / {t.panel} / {t.ref}: no data"
                                + (f" ({', '.join(absent)} not in Prometheus)" if absent
                                   else f" from {expr}"))
        assert queried > 40

        # -- the alerts this state must trigger, and those it must not -----------------------
        active = {(a["labels"]["alertname"], a["state"],
                   a["labels"].get("container") or a["labels"].get("registry")
                   or a["labels"].get("image", ""))
                  for a in prom.api("alerts")["alerts"]
                  if a["labels"].get("instance") == instance}
        wanted = [
            ("DockerHygieneRunningImageTooOld", "hygiene-bundle-old", {"pending", "firing"}),
            ("DockerHygieneRegistryRateLimitLow", limited.address, {"pending", "firing"}),
            ("DockerHygieneRegistryRateLimited", refusing.address, {"firing"}),
            ("DockerHygieneNewerVersionNotDeployed", "hygiene-bundle-drift", {"pending"}),
            ("DockerHygieneUnsignedImageRunning", "hygiene-bundle-drift", {"pending"}),
        ]
        for alert, subject, states in wanted:
            if not any(a == alert and s in states and who == subject for a, s, who in active):
                failures.append(f"{alert} for {subject} is not {'/'.join(sorted(states))}: "
                                f"active alerts {sorted(active)}")
        for alert in ("DockerHygieneExporterDown", "DockerHygieneEngineDown",
                      "DockerHygieneContainerDrifted", "DockerHygieneContainerImageStale",
                      "DockerHygieneUpstreamUpdateNotPulled",
                      "DockerHygieneUpstreamCheckFailing"):
            if any(a == alert for a, _, _ in active):
                failures.append(f"{alert} is active but must not be: {sorted(active)}")

        assert not failures, "\n".join(failures)
    finally:
        d.cli("rm", "-f", *containers, check=False)
        d.cli("rmi", "-f", *sorted(set(images)), check=False)


class _Exposition(BaseHTTPRequestHandler):
    body = b""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: Any) -> None:
        pass


def test_dashboards_on_a_containerd_node(started, tmp_path: Path, registry: Registry,
                                         exporter_factory) -> None:
    """The exporter on a Kubernetes node (a real containerd, read through CRI, with real
    pods): the same dashboards' panels have data, container rows and alerts carry the pod's
    namespace and pod, and no docker system df panel or alert shows for their absence.

    Two pods of one Deployment run app:1; the tag moved and was pulled again between them,
    so the older pod's container is stale."""
    node = started(Containerd(tmp_path / "node", registry.address)).start()
    ref = f"{registry.address}/k8s/app:1"
    push_busybox(registry.address, "k8s/app", "1", "2023-01-01T00:00:00Z", "old")
    node.run_pod("shop", "web-7d9f-abcde", {"app": ref})
    push_busybox(registry.address, "k8s/app", "1", "2023-06-01T00:00:00Z", "new")
    node.run_pod("shop", "web-7d9f-fghij", {"app": ref})
    exp = exporter_factory("--cri.endpoint", node.endpoint, "--collector.engine.interval",
                           "1s", "--upstream.interval", "2s", "--upstream.insecure-registries",
                           registry.address, "--versions.enabled", "false")
    try:
        instance = f"127.0.0.1:{exp.port}"
        prom = started(Prometheus(tmp_path / "prometheus", [instance], rule_files())).start()
        sel = f'job="{JOB}", instance="{instance}"'
        wait_query(prom, f"count_over_time(docker_up{{{sel}}}[1m]) >= 3", "three scrapes")
        wait_query(prom, f"container:docker_image_stale_age_seconds{{{sel}}}",
                   "the stale pod container recorded")
        failures: list[str] = []
        for name, dashboard in dashboards().items():
            for t in targets(name, dashboard):
                expr = substitute(t.expr, job=JOB, instance=instance.replace(".", r"\\."))
                try:
                    result = prom.query(expr)
                except AssertionError as exc:
                    failures.append(f"{name} / {t.panel} / {t.ref}: {exc}")
                    continue
                wanted = (name, t.panel) in CONTAINERD_ONLY_PANELS or t.panel in {
                    "Engine", "Hosts by engine", "Engine versions", "Stale containers",
                    "Longest-stale running containers", "Oldest containers"}
                if wanted and not result:
                    failures.append(f"{name} / {t.panel} / {t.ref}: no data from {expr}")
                if (name, t.panel) in DOCKER_DF_PANELS and result:
                    failures.append(f"{name} / {t.panel}: data on a containerd node: {result}")
                if t.panel in {"Stale containers", "Longest-stale running containers"} \
                        and t.ref == "A" and "count(" not in t.expr:
                    rows = {(r["metric"].get("namespace"), r["metric"].get("pod"))
                            for r in result}
                    if rows != {("shop", "web-7d9f-abcde")}:
                        failures.append(f"{name} / {t.panel}: rows {rows}")
        # Only the pod whose container still runs the old image: namespace=~".*" (All) and a
        # chosen namespace select it, another namespace does not.
        stale = 'container:docker_image_stale_age_seconds{job=~"$job", instance=~"$instance", ' \
                'namespace=~"$namespace", pod=~"$pod"}'
        for namespace, count in ((".*", 1), ("shop", 1), ("kube-system", 0)):
            got = prom.query(substitute(stale, job=JOB, instance=".+", namespace=namespace))
            if len(got) != count:
                failures.append(f"namespace={namespace!r}: {len(got)} stale rows, not {count}")
        # The stale pod's alert waits 24 hours after the re-pull (promtool's
        # alerts/tests/containerd.test.yml shows it firing with namespace and pod); its
        # recorded age is here. The images were built in 2023: the per-container age and
        # signature alerts are due, each for one pod's container.
        age = prom.query(f'container:docker_image_stale_age_seconds{{{sel}}}')
        if [(r["metric"].get("namespace"), r["metric"].get("pod")) for r in age] != \
                [("shop", "web-7d9f-abcde")]:
            failures.append(f"stale age rows: {age}")
        wait_for(lambda: ("DockerHygieneRunningImageTooOld", "shop", "web-7d9f-fghij")
                 in {(a["labels"]["alertname"], a["labels"].get("namespace"),
                      a["labels"].get("pod")) for a in prom.api("alerts")["alerts"]},
                 60, "a per-pod container alert")
        active = {(a["labels"]["alertname"], a["labels"].get("namespace"),
                   a["labels"].get("pod")) for a in prom.api("alerts")["alerts"]}
        container_alerts = {"DockerHygieneContainerImageStale", "DockerHygieneContainerTooOld",
                            "DockerHygieneRunningImageTooOld",
                            "DockerHygieneUnsignedImageRunning"}
        for alert, namespace, pod in active:
            if alert not in container_alerts or not (namespace and pod):
                failures.append(f"{alert} is active on a containerd node: {sorted(active)}")
        assert not failures, "\n".join(failures)
    finally:
        exp.stop()
