"""A fresh, healthy, quiet host raises nothing (issue 17): only local builds, one of them a
reproducible build dated 1980 that a container runs, and no route to Docker Hub.

A private dockerd (so no other test's pulls are on it) holds images imported, built and
``docker load``-ed here, none pulled from a registry. The exporter runs with default flags
but ``--hub.url`` on a loopback port where nothing listens, so any request to Docker Hub
would fail and be counted: there must be none, and the hub collector must be healthy. The
1980 image keeps its created timestamp in the metrics but has no age on the status page or
in ``report``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from exporter.status import NO_DATE, human_age
from tests.images import load_old_image
from tests.services import ROOT, Dockerd, free_port
from tests.test_bundle_prometheus import run_container

REPRODUCIBLE = "hygiene-quiet/distroless:nonroot"
OLD = "hygiene-quiet/legacy:2019"


@pytest.fixture(scope="module")
def quiet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dockerd]:
    root = Path(tmp_path_factory.mktemp("quiet-dockerd", numbered=True))
    d = Dockerd(root).start()
    try:
        d.make_base_image("hygiene-base:1")
        d.build("mycorp/app:1.2.3", "FROM hygiene-base:1\nCOPY v /v\n", {"v": "quiet app"})
        load_old_image(d, REPRODUCIBLE, "1980-01-01T00:00:01Z", root)
        load_old_image(d, OLD, "2019-03-01T00:00:00Z", root)
        run_container(d, "quiet-distroless", REPRODUCIBLE)
        run_container(d, "quiet-app", "mycorp/app:1.2.3")
        assert "@" not in d.cli("images", "--digests", "--format", "{{.Digest}}").replace(
            "<none>", "")  # nothing came from a registry
        yield d
    finally:
        d.stop()


def test_hub_has_nothing_to_ask_and_is_healthy(quiet: Dockerd, exporter_factory) -> None:
    hub = f"127.0.0.1:{free_port()}"  # nothing listens: any request would fail
    exp = exporter_factory("--docker.host", quiet.host, "--hub.url", f"http://{hub}",
                           "--hub.interval", "1s", "--collector.engine.interval", "1s",
                           "--upstream.interval", "1s", "--versions.interval", "1s")
    m = exp.wait_metrics(lambda m: m.get("docker_exporter_collector_success",
                                         collector="hub") == 1, what="the hub collector")
    first = m.get("docker_exporter_collector_last_success_timestamp_seconds", collector="hub")
    assert first is not None
    m = exp.wait_metrics(lambda m: (m.get(
        "docker_exporter_collector_last_success_timestamp_seconds", collector="hub")
        or 0) >= first + 3, what="three more Hub cycles")
    assert m.get("docker_exporter_collector_success", collector="hub") == 1
    assert m.get("docker_exporter_collector_failures_total", collector="hub") == 0
    assert not [lb for lb, _ in m.select("docker_registry_requests_total")
                if lb.get("registry") == hub], m.select("docker_registry_requests_total")
    assert m.select("docker_hub_repository_pulls_total") == []
    # Nothing else on this host fails either.
    assert {lb["collector"]: v for lb, v in m.select("docker_exporter_collector_success")} \
        == dict.fromkeys(("engine", "disk", "upstream", "versions", "events", "hub"), 1.0)
    assert "is failing" not in exp.log()


def test_reproducible_build_has_no_age(quiet: Dockerd, exporter_factory) -> None:
    exp = exporter_factory("--docker.host", quiet.host, "--upstream.mode", "off")
    repro_id = quiet.image_id(REPRODUCIBLE)
    m = exp.scrape()
    # The metric is the config's truth: 1980-01-01T00:00:01Z.
    assert m.get("docker_image_created_timestamp_seconds", id=repro_id) == 315532801
    page = httpx.get(f"{exp.url}/", timeout=10).text
    row = next(r for r in page.split("<tr>") if REPRODUCIBLE.replace("/", "/<wbr>") in r
               and 'data-label="Built"' in r)
    assert NO_DATE in row and "years" not in row, row
    assert "46 years" not in page
    # The oldest image is the 2019 build, not the reproducible one.
    age = human_age(time.time() - 1551398400)  # 2019-03-01
    assert f'<div class="n">{age}</div><div class="l">age of the oldest image' in page

    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_HYGIENE_")}
    out = subprocess.run([sys.executable, "-m", "exporter", "report", "--docker.host",
                          quiet.host, "--upstream.mode", "off", "--hub.enabled", "false"],
                         capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    oldest = lines[next(i for i, x in enumerate(lines) if x.startswith("OLDEST IMAGES")):]
    rows = [x for x in oldest if x.startswith(("hygiene-quiet/", "mycorp/", "hygiene-base"))]
    # Oldest first, the reproducible build last, with no age.
    assert rows[0].startswith(OLD) and age in rows[0], oldest
    assert rows[-1].startswith(REPRODUCIBLE) and NO_DATE in rows[-1], oldest
    assert "46 years" not in out.stdout
