"""Registries that trickle, loop, lie or say 429, all at once, while a healthy registry keeps
being checked on schedule: one exporter, 40 seconds, a real dockerd and a real registry
behind seven hostile proxies (tests/hostile.py)."""

from __future__ import annotations

import itertools
import time

from tests.hostile import HostileRegistry
from tests.services import Dockerd, Registry
from tests.test_faults import _proc_counts
from tests.test_upstream import push_version, status

MODES = {  # mode -> the state the tag must be in
    "trickle": "unknown:timeout",
    "429": "unknown:rate_limited",
    "huge": "unknown:bad_response",
    "redirect_loop": "unknown:bad_response",
    "invalid_json": "unknown:bad_response",
    "bogus_digest": "unknown:bad_response",
    "endless_link": "current",  # its manifests are honest; only its tag list loops
}
RUN = 40.0


def test_hostile_registries_leave_the_healthy_one_alone(dockerd: Dockerd, registry: Registry,
                                                        exporter_factory) -> None:
    healthy = f"{registry.address}/hygiene/healthy:1.0.0"
    push_version(dockerd, healthy, "healthy")
    source = f"{registry.address}/hygiene/hostile:1.0.0"
    push_version(dockerd, source, "hostile")
    proxies = {mode: HostileRegistry(registry.port).start() for mode in MODES}
    try:
        refs = {}
        for mode, proxy in proxies.items():
            proxy.real_tag = "1.0.0"
            refs[mode] = f"{proxy.address}/hygiene/hostile:1.0.0"
            dockerd.cli("pull", refs[mode])  # through the proxy, honestly: a RepoDigest
        for proxy in proxies.values():
            proxy.mode = next(m for m, p in proxies.items() if p is proxy)
        exp = exporter_factory(
            "--docker.host", dockerd.host, "--collector.engine.interval", "1s",
            "--collector.disk.interval", "1h", "--upstream.interval", "2s",
            "--upstream.timeout", "5s", "--versions.interval", "2s",
            "--upstream.include", "hygiene/(healthy|hostile)")
        started = time.time()
        def decided(m) -> bool:
            return all(status(m, ref) == MODES[mode] for mode, ref in refs.items()) and \
                status(m, healthy) == "current"
        try:
            first = exp.wait_metrics(decided, timeout=45, what="every state decided")
        except TimeoutError:
            m = exp.scrape()
            raise AssertionError({mode: status(m, ref) for mode, ref in refs.items()}) from None
        rss_before = _proc_counts(exp.proc.pid)[2]
        checked = []
        while time.time() - started < RUN:
            m = exp.scrape()
            checked.append((time.time(), m.get(
                "docker_image_upstream_last_check_timestamp_seconds", image=healthy)))
            for mode, ref in refs.items():
                assert status(m, ref) == MODES[mode], (mode, status(m, ref))
            time.sleep(1)
        last = exp.scrape()
        rss_after = _proc_counts(exp.proc.pid)[2]
    finally:
        for proxy in proxies.values():
            proxy.stop()

    assert first is not None
    # The healthy registry kept being checked on schedule (every 2 s, jittered) throughout.
    times = sorted({t for _, t in checked if t is not None})
    assert len(times) >= RUN / 2.2 * 0.6, times
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert max(gaps) < 6.0, gaps
    assert checked[-1][0] - checked[-1][1] < 6.0, checked[-1]

    # 429 with Retry-After 3600: one request (the first contact), then nothing, whatever
    # drift, versions and signatures wanted.
    assert proxies["429"].requests() <= 1, proxies["429"].counts
    # A tag list whose Link never ends is read a page or two per interval, not for ever.
    listings = sum(n for (method, path), n in proxies["endless_link"].counts.items()
                   if path.endswith("/tags/list"))
    assert 0 < listings <= 2 * (RUN / 2 + 10), proxies["endless_link"].counts
    assert "pages repeat or do not end" in exp.log()
    # A 50 MB manifest is cut off at the cap: a few MB per attempt, not 50.
    huge_gets = sum(n for (method, path), n in proxies["huge"].counts.items()
                    if method == "GET" and "/manifests/" in path)
    assert huge_gets >= 1
    assert proxies["huge"].sent_bytes < huge_gets * 12 * 1024 * 1024, \
        (proxies["huge"].sent_bytes, huge_gets)
    assert rss_after - rss_before < 30 * 1024, (rss_before, rss_after)  # kB
    # A redirect loop is not followed round and round.
    redirects = proxies["redirect_loop"].requests()
    assert redirects <= RUN, proxies["redirect_loop"].counts
    # Nothing hostile ever showed as current or drifted, and the counters say what happened.
    assert last.get("docker_registry_requests_total", registry=proxies["429"].address,
                    method="GET", code="429") == 1
    assert (last.get("docker_registry_requests_total", registry=proxies["trickle"].address,
                     method="GET", code="timeout") or 0) + (
        last.get("docker_registry_requests_total", registry=proxies["trickle"].address,
                 method="HEAD", code="timeout") or 0) >= 1
    assert last.get("docker_exporter_collector_success", collector="upstream") == 1
    assert last.get("docker_exporter_collector_alive", collector="upstream") == 1
