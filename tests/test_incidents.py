"""The shipped alerts through real incidents, end to end, as an on-call receives them.

The exporter watches a real dockerd and registry; a real Prometheus loads a copy of every
shipped rule file in which only the durations of ``for:`` and ``keep_firing_for:`` are divided
by ``SCALE`` (thresholds and expressions are as shipped); a real Alertmanager runs the example
routing (alerts/alertmanager.example.yml: its routes, timers divided by ``SCALE``, and
inhibitions), its receivers pointed at a webhook here that records every notification.

Grace periods of days are measured from timestamps the exporter keeps in its state store, so
the test starts the exporter on a state file as a run of days ago left it: the drift of one
tag first seen 8 days ago, and the image a re-pulled tag names first seen 2 days ago. The
images, containers, pulls, registry, outage and restart are real.

A second, quiet host (its own dockerd: local builds only, one reproducible image dated 1980
that a container runs, an old 2019 image, a dangling image, Docker Hub unreachable) is
watched by a second exporter in zero configuration the whole time: no warning or critical
alert may even be pending for it, no collector fails (the hub collector has nothing to ask,
so it asks nothing), and the 1980 image has no age on the status page or in ``report``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from exporter.bundle import RUNBOOK_URL
from exporter.decisions.tagged import TagSeen
from exporter.state import StateStore
from exporter.status import NO_DATE, human_age
from tests.images import load_old_image
from tests.promql import ALERTS, rule_files
from tests.registries import FaultProxy
from tests.services import (
    ROOT,
    Alertmanager,
    Dockerd,
    ExporterProcess,
    Prometheus,
    Registry,
    free_port,
    wait_for,
)
from tests.test_upstream import publish_elsewhere, push_version

SCALE = 60
DAY = 86400.0
UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
FAST = ("--collector.engine.interval", "1s", "--collector.disk.interval", "1s")


def seconds(duration: str) -> float:
    parts = re.findall(r"(\d+)(ms|s|m|h|d|w)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    return sum(int(n) * UNITS[u] for n, u in parts)


def scaled(duration: str) -> str:
    return f"{max(1, round(seconds(duration) * 1000 / SCALE))}ms"


def scaled_rules(out: Path) -> list[Path]:
    """Every shipped rule file, only its for: and keep_firing_for: divided by SCALE."""
    out.mkdir()
    files = []
    for f in rule_files():
        doc = yaml.safe_load(f.read_text())
        for group in doc["groups"]:
            for rule in group["rules"]:
                for key in ("for", "keep_firing_for"):
                    if key in rule:
                        rule[key] = scaled(rule[key])
        (out / f.name).write_text(yaml.safe_dump(doc, sort_keys=False))
        files.append(out / f.name)
    return files


class Receiver:
    """A webhook that records what Alertmanager sends, per receiver (the URL path)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.received: list[tuple[float, str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with receiver._lock:
                    receiver.received.append((time.time(), self.path.strip("/"), body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def alerts(self) -> list[tuple[float, str, str, dict[str, Any]]]:
        """(when, receiver, notification status, alert) for every alert of every
        notification."""
        with self._lock:
            return [(t, r, a["status"], a) for t, r, body in self.received
                    for a in body["alerts"]]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def example_routing(receiver: Receiver) -> dict[str, Any]:
    """The shipped example: routes and inhibitions as they are, timers divided by SCALE, the
    receivers' endpoints replaced by the recording webhook."""
    config = yaml.safe_load((ALERTS / "alertmanager.example.yml").read_text())

    def scale(route: dict[str, Any]) -> None:
        for key in ("group_wait", "group_interval", "repeat_interval"):
            if key in route:
                route[key] = scaled(route[key])
        for sub in route.get("routes", []):
            scale(sub)

    scale(config["route"])
    names = [r["name"] for r in config["receivers"]]
    assert names == ["not-routed", "pager", "tickets"], names
    config["receivers"] = [{"name": "not-routed"}] + [
        {"name": n, "webhook_configs": [{"url": receiver.url(n), "send_resolved": True}]}
        for n in ("pager", "tickets")]
    return config


@pytest.fixture
def started() -> Iterator[list[Any]]:
    services: list[Any] = []
    yield services
    for service in reversed(services):
        service.stop()


def active(prom: Prometheus, instance: str) -> dict[tuple[str, str], str]:
    """(alertname, subject) -> state, for the instance's pending and firing alerts."""
    out = {}
    for a in prom.api("alerts")["alerts"]:
        labels = a["labels"]
        if labels.get("instance") == instance:
            subject = labels.get("container") or labels.get("registry") or ""
            out[(labels["alertname"], subject)] = a["state"]
    return out


def check_rendered(alert: dict[str, Any]) -> list[str]:
    """What is wrong with one notified alert's text: every annotation filled with real
    values, the runbook URL that of the alert."""
    name, notes, labels = alert["labels"]["alertname"], alert["annotations"], alert["labels"]
    problems = []
    for key in ("summary", "description", "runbook_url"):
        text = notes.get(key, "")
        if not text.strip():
            problems.append(f"{name}: {key} is empty")
        for bad in ("<no value>", "{{", "%!", "NaN", "+Inf"):
            if bad in text:
                problems.append(f"{name}: {key} has {bad!r}: {text!r}")
    if notes.get("runbook_url") != f"{RUNBOOK_URL}#{name.lower()}":
        problems.append(f"{name}: runbook_url {notes.get('runbook_url')!r}")
    for label in ("instance", "container", "registry"):
        if label in labels and labels[label] not in notes.get("description", ""):
            problems.append(f"{name}: description does not name {label} {labels[label]!r}: "
                            f"{notes.get('description')!r}")
    return problems


REPRODUCIBLE = "hygiene-quiet/distroless:nonroot"
OLD = "hygiene-quiet/legacy:2019"


def quiet_host_is_healthy(exp: ExporterProcess, quiet: Dockerd, hub: str) -> None:
    """Every collector healthy, the hub one too (it had nothing to ask, so asked nothing,
    cycle after cycle); the reproducible build has no age on the page or in ``report``, and
    the oldest image is the 2019 build."""
    m = exp.scrape()
    assert (m.get("docker_exporter_collector_last_success_timestamp_seconds", collector="hub")
            or 0) - (m.get("process_start_time_seconds") or 0) > 3, "the hub collector"
    assert m.get("docker_exporter_collector_failures_total", collector="hub") == 0
    assert not [lb for lb, _ in m.select("docker_registry_requests_total")
                if lb.get("registry") == hub], m.select("docker_registry_requests_total")
    assert {lb["collector"]: v for lb, v in m.select("docker_exporter_collector_success")} \
        == dict.fromkeys(("engine", "disk", "upstream", "versions", "events", "hub"), 1.0)
    assert "is failing" not in exp.log()
    # The metric is the config's truth, 1980-01-01T00:00:01Z; the page and report say
    # "reproducible build", not "46 years".
    repro_id = quiet.image_id(REPRODUCIBLE)
    assert m.get("docker_image_created_timestamp_seconds", id=repro_id) == 315532801
    page = httpx.get(f"{exp.url}/", timeout=10).text
    row = next(r for r in page.split("<tr>") if REPRODUCIBLE.replace("/", "/<wbr>") in r
               and 'data-label="Built"' in r)
    assert NO_DATE in row and "years" not in row, row
    age = human_age(time.time() - 1551398400)  # 2019-03-01
    assert f'<div class="n">{age}</div><div class="l">age of the oldest image' in page
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_HYGIENE_")}
    out = subprocess.run([sys.executable, "-m", "exporter", "report", "--docker.host",
                          quiet.host, "--upstream.mode", "off", "--hub.enabled", "false"],
                         capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    oldest = lines[next(i for i, x in enumerate(lines) if x.startswith("OLDEST IMAGES")):]
    rows = [x for x in oldest if x.startswith(("hygiene-quiet/", "quiet-", "hygiene-base"))]
    assert rows[0].startswith(OLD) and age in rows[0], oldest  # oldest first
    assert rows[-1].startswith(REPRODUCIBLE) and NO_DATE in rows[-1], oldest  # no age: last
    assert "46 years" not in out.stdout


def freed_by_prune(d: Dockerd) -> float:
    """``docker image prune`` on its own, and the bytes it says it freed."""
    out = d.cli("image", "prune", "-f")
    found = re.search(r"Total reclaimed space: ([\d.]+)\s*([kMGT]?B)", out)
    assert found, out
    factor = {"B": 1, "kB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12}[found.group(2)]
    return float(found.group(1)) * factor


def test_incidents_page_once_stay_firing_and_resolve(
        dockerd: Dockerd, registry: Registry, exporter_factory, started: list[Any],
        tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    d = dockerd
    stale_ref = f"{registry.address}/hygiene/incident-stale:1"
    proxy = FaultProxy(registry.port).start()
    started.append(proxy)
    drift_ref = f"{proxy.address}/hygiene/incident-drift:1"
    stale_name, drift_name = "hygiene-incident-stale", "hygiene-incident-drift"
    images: list[str] = []
    # A short root: containerd's socket path must fit in a unix socket address.
    quiet = Dockerd(tmp_path_factory.mktemp("quiet", numbered=True)).start()
    started.append(quiet)
    try:
        # -- the incident host (the suite's dockerd) --------------------------------------
        for ref, name in ((stale_ref, stale_name), (drift_ref, drift_name)):
            images.append(push_version(d, ref, f"{name} one"))
            d.cli("rmi", ref)
            d.cli("pull", ref)
            d.cli("run", "-d", "--name", name, *d.RUN, ref, "/bin/busybox", "sleep", "3600")
        images.append(publish_elsewhere(d, drift_ref, "drift two"))  # the registry moves on
        new_id = publish_elsewhere(d, stale_ref, "stale two")
        d.cli("rmi", new_id)  # so that the pull below downloads it, as on another host
        d.cli("pull", stale_ref)  # pulled again, the container not recreated: stale
        assert d.image_id(stale_ref) == new_id
        images.append(new_id)
        # The state a run of days ago left: drift first seen 8 days ago, the re-pulled
        # image first seen under its tag 2 days ago (dockerd records no LastTagTime for a
        # pull).
        state = tmp_path / "incident-state.db"
        now = time.time()
        store = StateStore(str(state))
        store.set_drift_since(drift_ref, now - 8 * DAY)
        store.keep_tags_seen({stale_ref: TagSeen(new_id, now - 2 * DAY, now - 2 * DAY - 60)})
        store.close()

        # -- the quiet host ------------------------------------------------------------------
        quiet.make_base_image("hygiene-base:1")
        quiet.build("quiet-app:1", "FROM hygiene-base:1\nCOPY v /v\n", {"v": "app"})
        load_old_image(quiet, REPRODUCIBLE, "1980-01-01T00:00:01Z", tmp_path)
        load_old_image(quiet, OLD, "2019-03-01T00:00:00Z", tmp_path)
        for name, image in (("quiet-app", "quiet-app:1"),
                            ("quiet-reproducible", REPRODUCIBLE)):
            quiet.cli("run", "-d", "--name", name, *quiet.RUN, image,
                      "/bin/busybox", "sleep", "3600")
        # A tag built twice leaves the first build dangling: 3 MB of its own, on a shared base.
        for n in (1, 2):
            quiet.build("quiet-rebuilt:1", f"FROM hygiene-base:1\nRUN /bin/busybox dd "
                        f"if=/dev/urandom of=/blob bs=1M count=3 && echo {n} > /n\n")
        # BuildKit's cache would hold the layers after the image goes (a prune then frees
        # 0 B); images pulled or loaded have no such cache.
        quiet.cli("builder", "prune", "-af")

        # -- exporters, Alertmanager, Prometheus ---------------------------------------------
        exp: ExporterProcess = exporter_factory(
            "--docker.host", d.host, "--state.path", str(state), *FAST,
            "--upstream.interval", "2s",
            "--upstream.include", rf"^({re.escape(registry.address)}|{re.escape(proxy.address)})"
                                  "/hygiene/incident-")
        closed = free_port()  # nothing listens: Docker Hub is unreachable from the quiet host
        calm: ExporterProcess = exporter_factory(
            "--docker.host", quiet.host, *FAST, "--hub.enabled", "true",
            "--hub.url", f"http://127.0.0.1:{closed}", "--hub.interval", "1s")
        receiver = Receiver()
        started.append(receiver)
        am = Alertmanager(tmp_path / "alertmanager", example_routing(receiver)).start()
        started.append(am)
        host, calm_host = (e.url.removeprefix("http://") for e in (exp, calm))
        prom = Prometheus(tmp_path / "prometheus", [host, calm_host],
                          scaled_rules(tmp_path / "rules"), alertmanager=am.address).start()
        started.append(prom)
        t0 = time.time()

        def firing(alert: str, subject: str) -> bool:
            return active(prom, host).get((alert, subject)) == "firing"

        drifted = ("DockerHygieneContainerDrifted", drift_name)
        stale = ("DockerHygieneContainerImageStale", stale_name)
        wait_for(lambda: firing(*drifted) and firing(*stale), 60,
                 "drift and staleness to fire", interval=0.5)
        fired = time.time() - t0
        # An incident is one notification, to the ticket queue, not the pager.
        wait_for(lambda: {(a["labels"]["alertname"], a["labels"].get("container"))
                          for _, r, s, a in receiver.alerts() if r == "tickets"}
                 >= {drifted, stale}, 30, "both notified", interval=0.5)

        # -- the registry goes down: drift stays firing ----------------------------------------
        proxy.mode, proxy.status, proxy.headers = "status", 503, {}
        outage = time.time()
        wait_for(lambda: prom.query(
            f'docker_image_upstream_status{{instance="{host}", status="unknown", '
            f'image="{drift_ref}"}} == 1'), 30, "the drift check to fail", interval=0.5)
        gaps = []
        keep = seconds("15m") / SCALE
        while time.time() < outage + keep + 5:  # past keep_firing_for: the verdict holds it
            if not firing(*drifted):
                gaps.append(round(time.time() - t0, 1))
            time.sleep(0.5)
        # -- and the exporter restarts while it is down: still firing ------------------------
        exp.stop()
        exp.start()
        restarted = time.time()
        while time.time() < restarted + keep + 5:
            if not firing(*drifted):
                gaps.append(round(time.time() - t0, 1))
            time.sleep(0.5)
        assert not gaps, f"ContainerDrifted was not firing at {gaps} s"
        assert prom.query(f'docker_image_upstream_drift{{instance="{host}", '
                          f'image="{drift_ref}"}} == 1'), "the verdict did not survive"
        proxy.mode = "pass"

        # -- the stale container is recreated: resolved, and told so ---------------------------
        d.cli("rm", "-f", stale_name)
        d.cli("run", "-d", "--name", stale_name, *d.RUN, stale_ref,
              "/bin/busybox", "sleep", "3600")
        recreated = time.time()
        wait_for(lambda: stale not in active(prom, host), 60, "staleness to resolve",
                 interval=0.5)
        resolved = time.time() - recreated
        wait_for(lambda: any(s == "resolved" and (a["labels"]["alertname"],
                                                  a["labels"].get("container")) == stale
                             for _, _, s, a in receiver.alerts()),
                 30, "the resolved notification", interval=0.5)

        # -- dangling bytes are what prune frees ---------------------------------------------
        quiet_now = prom.query(f'docker_images_dangling_bytes{{instance="{calm_host}"}}')
        assert quiet_now, "docker_images_dangling_bytes not scraped"
        dangling = float(quiet_now[0]["value"][1])
        freed = freed_by_prune(quiet)
        assert dangling > 2e6 and abs(dangling - freed) <= 0.01 * freed, (dangling, freed)

        # -- the quiet host: nothing ever pending, after the longest for: --------------------
        longest = max(seconds(r["for"]) for f in rule_files()
                      for g in yaml.safe_load(f.read_text())["groups"] for r in g["rules"]
                      if "for" in r and r.get("labels", {}).get("severity") != "info") / SCALE
        wait_for(lambda: time.time() > t0 + longest + 5, longest + 10, "the longest for:")
        window = int(time.time() - t0) + 1
        noisy = prom.query(f'max_over_time(ALERTS{{instance="{calm_host}", '
                           f'severity=~"warning|critical"}}[{window}s])')
        assert not noisy, f"the quiet host raised {[n['metric'] for n in noisy]}"
        quiet_host_is_healthy(calm, quiet, f"127.0.0.1:{closed}")

        # -- what the on-call received ----------------------------------------------------------
        notified = receiver.alerts()
        problems = [p for _, _, _, a in notified for p in check_rendered(a)]
        assert not problems, "\n".join(problems)
        drift_notes = [(s, r) for _, r, s, a in notified
                       if (a["labels"]["alertname"], a["labels"].get("container")) == drifted]
        assert drift_notes and all(n == ("firing", "tickets") for n in drift_notes), \
            f"drift notified {drift_notes}: a resolve and re-fire is a ticket closed and opened"
        assert not [a for _, r, _, a in notified if r == "pager"], \
            "the pager was called: nothing here loses hygiene data"
        assert not [a for _, _, _, a in notified if a["labels"].get("instance") == calm_host]
        # The figures, for the record (pytest -rP shows them).
        print(f"fired {fired:.1f} s after start; drift firing through a {keep + 5:.1f} s "
              f"outage and a restart; stale resolved {resolved:.1f} s after the recreate; "
              f"dangling {dangling:.0f} B exported, {freed:.0f} B freed by prune; "
              f"{len(notified)} alerts notified, all rendered; quiet host silent for "
              f"{window} s")
    finally:
        d.cli("rm", "-f", stale_name, drift_name, check=False)
        d.cli("rmi", "-f", *images, stale_ref, drift_ref, check=False)
