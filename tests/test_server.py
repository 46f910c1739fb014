"""The HTTP interface and the exporter's behaviour around the engine, run as users run it."""

from __future__ import annotations

import concurrent.futures
import difflib
import gzip
import subprocess
import time
from pathlib import Path

import httpx

from tests.services import Dockerd, need, wait_for


def test_endpoints(dockerd: Dockerd, exporter_factory) -> None:
    exp = exporter_factory("--docker.host", dockerd.host, "--collector.disk.interval", "7m")
    page = httpx.get(exp.url + "/")
    assert page.status_code == 200 and 'href="/metrics"' in page.text
    assert dockerd.host in page.text and 'href="/config"' in page.text
    # The configuration in force has its own page.
    config = httpx.get(exp.url + "/config")
    assert config.headers["content-type"] == "text/html; charset=utf-8"
    assert "collector.disk.interval" in config.text and "<code>7m</code>" in config.text
    status = httpx.get(exp.url + "/status.json")
    assert status.headers["content-type"] == "application/json"
    assert status.json()["docker_host"] == dockerd.host
    assert httpx.get(exp.url + "/-/healthy").status_code == 200
    assert httpx.get(exp.url + "/-/ready").status_code == 200
    assert httpx.get(exp.url + "/nope").status_code == 404
    post = httpx.post(exp.url + "/metrics", content=b"x")
    assert post.status_code == 405 and post.headers["allow"] == "GET, HEAD"

    plain = httpx.get(exp.url + "/metrics", headers={"Accept-Encoding": "identity"})
    assert plain.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert "docker_up 1.0" in plain.text
    zipped = httpx.get(exp.url + "/metrics", headers={"Accept-Encoding": "gzip"})
    assert zipped.headers["content-encoding"] == "gzip"
    om = httpx.get(exp.url + "/metrics",
                   headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert om.headers["content-type"].startswith("application/openmetrics-text")
    assert om.text.rstrip().endswith("# EOF")
    with httpx.stream("GET", exp.url + "/metrics", headers={"Accept-Encoding": "gzip"}) as r:
        assert b"docker_exporter_build_info" in gzip.decompress(b"".join(r.iter_raw()))


def test_custom_telemetry_path(dockerd: Dockerd, exporter_factory) -> None:
    exp = exporter_factory("--docker.host", dockerd.host, "--web.telemetry-path", "/m")
    assert "docker_up 1.0" in httpx.get(exp.url + "/m").text
    assert httpx.get(exp.url + "/metrics").status_code == 404
    assert 'href="/m"' in httpx.get(exp.url + "/").text


def test_promtool_finds_no_problem_in_a_real_scrape(dockerd: Dockerd, exporter_factory) -> None:
    promtool = need("promtool")
    exp = exporter_factory("--docker.host", dockerd.host, "--collector.disk.interval", "1s")
    exp.wait_metrics(lambda m: m.get("docker_exporter_collector_success", collector="disk") == 1)
    text = exp.scrape_text()
    assert "docker_image_info{" in text and "docker_disk_usage_bytes{" in text
    lint = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                          text=True)
    assert lint.returncode == 0 and lint.stdout + lint.stderr == "", lint.stdout + lint.stderr


def test_concurrent_scrapes_are_consistent(dockerd: Dockerd, exporter_factory) -> None:
    exp = exporter_factory("--docker.host", dockerd.host, "--collector.engine.interval", "1h",
                           "--collector.disk.interval", "1h")
    exp.wait_metrics(lambda m: all(m.get("docker_exporter_collector_success", collector=c) == 1
                                   for c in ("disk", "upstream", "versions")), timeout=60)

    def body(_: int = 0) -> str:
        text = exp.scrape_text()
        # Times that move by themselves: durations, and each loop's last success (an event
        # stream's is "now"; the upstream loop publishes every few seconds).
        return "\n".join(line for line in text.splitlines()
                          if line.startswith("docker_") and "duration" not in line
                          and "_last_success_timestamp_seconds" not in line)

    # The session's engine holds earlier tests' images: their checks, versions and signature
    # lookups may still be arriving. Wait until two bodies, more than an upstream tick apart,
    # agree, so that what changes below can only be a torn or inconsistent render.
    previous = [body()]

    def settled() -> bool:
        time.sleep(6)
        current = body()
        same, previous[0] = current == previous[0], current
        return same

    wait_for(settled, 90, "the exported state to settle", interval=0)
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        bodies = set(pool.map(body, range(200)))
    assert len(bodies) == 1, "\n".join(difflib.unified_diff(
        *(b.splitlines() for b in list(bodies)[:2]), lineterm="", n=0))


def test_engine_absent_at_start_then_up(exporter_factory, tmp_path_factory) -> None:
    root = Path(tmp_path_factory.mktemp("late", numbered=True))
    late = Dockerd(root)
    exp = exporter_factory("--docker.host", late.host, "--collector.engine.interval", "30s",
                           "--collector.disk.interval", "30s")
    metrics = exp.scrape()
    assert metrics.get("docker_up") == 0
    assert metrics.get("docker_exporter_collector_success", collector="engine") == 0
    assert metrics.get("docker_exporter_collector_last_success_timestamp_seconds",
                       collector="engine") is None
    assert httpx.get(exp.url + "/-/ready").status_code == 200  # the first read finished
    # Retries back off (1 s, 2 s, ...) without a log line per attempt.
    wait_for(lambda: "is failing" in exp.log(), 5, "the failure to be logged")
    time.sleep(3.5)
    assert exp.log().count("source engine is failing") == 1, exp.log()
    assert exp.log().count("source disk is failing") == 1, exp.log()
    late.start()
    try:
        exp.wait_metrics(lambda m: m.get("docker_up") == 1, timeout=30, what="docker_up 1")
        wait_for(lambda: "source engine is up again" in exp.log(), 30, "the recovery line")
        assert exp.log().count("source engine is up again") == 1
        exp.wait_metrics(lambda m: m.get("docker_disk_objects", kind="images") is not None,
                         timeout=40, what="disk figures after recovery")
    finally:
        late.stop()


def test_json_logs(dockerd: Dockerd, exporter_factory) -> None:
    import json

    exp = exporter_factory("--docker.host", dockerd.host, "--log.format", "json")
    wait_for(lambda: "source engine is up" in exp.log(), 10, "a log line")
    lines = [json.loads(line) for line in exp.log().splitlines()]
    assert {"ts", "level", "logger", "msg"} <= set(lines[0])
    assert any(line["msg"] == "source engine is up" and line["level"] == "info"
               for line in lines)
