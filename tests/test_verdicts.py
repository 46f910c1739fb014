"""What a check decided stands while later checks cannot decide, across restarts, and a
registry that failed is asked again within minutes: the scheduler and the state store on
their own, with scripted outcomes (the same through real registries: tests/test_upstream.py
and the alert suite, tests/test_incidents.py)."""

from __future__ import annotations

import time
from pathlib import Path

from exporter import reference
from exporter.registry.policy import MAX_BACKOFF, Counters
from exporter.snapshots import TagState
from exporter.sources.upstream import MIN_BACKOFF, Checks, Outcome, Target, local_record
from exporter.state import StateStore

IMAGE = "127.0.0.1:5000/app:1"


class Scripted:
    """A check that answers what the test says next."""

    def __init__(self) -> None:
        self.next = Outcome("unknown", "unreachable")

    def __call__(self, t: Target) -> Outcome:
        return self.next

    def keep_only(self, digests: set[str]) -> None:
        pass


def target(image_id: str = "sha256:old") -> Target:
    return Target(IMAGE, reference.parse(IMAGE), image_id, frozenset({"sha256:pulled"}))


def checks(store: StateStore, check: Scripted, targets: list[Target]) -> Checks:
    return Checks(lambda: targets, check, local_record(store), Counters, 3600.0, 4, 2,
                  forget=store.forget_upstream)


def decide(c: Checks, check: Scripted, outcome: Outcome, t: Target) -> TagState:
    check.next = outcome
    c._record(t, c.check(t))
    return c.states[IMAGE]


def test_the_last_verdict_stands_while_unknown_and_after_a_restart(tmp_path: Path) -> None:
    path = str(tmp_path / "state.db")
    store, check, t = StateStore(path), Scripted(), target()
    c = checks(store, check, [t])
    c._wanted = {IMAGE}
    drifted = Outcome("drifted", digest="sha256:new", config="sha256:newcfg")
    state = decide(c, check, drifted, t)
    assert (state.status, state.verdict) == ("drifted", "drifted")
    since, checked = state.drift_since, state.checked
    for reason in ("unreachable", "timeout", "server_error", "rate_limited") * 250:
        state = decide(c, check, Outcome("unknown", reason), t)
        assert (state.status, state.reason, state.verdict) == ("unknown", reason, "drifted")
        assert (state.drift_since, state.checked) == (since, checked)
    c.close()
    store.close()

    # A restart while the registry is still down: the verdict comes from the state store.
    store = StateStore(path)
    c = checks(store, check, [t])
    c._wanted = {IMAGE}
    state = decide(c, check, Outcome("unknown", "unreachable"), t)
    assert (state.verdict, state.drift_since, state.checked) == ("drifted", since, checked)
    assert state.upstream_config == "sha256:newcfg"
    # The tag pulled anew names another image: what was decided of the old one is not its.
    state = decide(c, check, Outcome("unknown", "unreachable"), target("sha256:newcfg"))
    assert state.verdict == ""
    # Decided current: the verdict follows, and drift-since clears.
    state = decide(c, check, Outcome("current", digest="sha256:new"), target("sha256:newcfg"))
    assert (state.verdict, state.drift_since) == ("current", None)
    c.close()
    store.close()


def test_a_tag_no_longer_local_takes_its_verdict_along(tmp_path: Path) -> None:
    store, check, t = StateStore(str(tmp_path / "state.db")), Scripted(), target()
    c = checks(store, check, [t])
    c._wanted = {IMAGE}
    decide(c, check, Outcome("drifted", digest="sha256:new"), t)
    assert store.verdict(IMAGE) is not None and store.drift_since(IMAGE) is not None
    c.discover = lambda: []
    c.run()
    assert store.verdict(IMAGE) is None and store.drift_since(IMAGE) is None
    c.close()
    store.close()


def test_a_registry_that_comes_back_is_asked_again_within_minutes() -> None:
    """Thousands of failures of the registry itself never push the next check past the
    policy's longest back-off; a tag's own failure (not found) backs off up to the interval."""
    store, check, t = StateStore(None), Scripted(), target()
    c = checks(store, check, [t])
    c._wanted = {IMAGE}
    waits = []
    for reason in ("unreachable", "timeout", "server_error", "tls_error") * 1000:
        decide(c, check, Outcome("unknown", reason), t)
        waits.append(c._due[IMAGE] - time.monotonic())
    assert MIN_BACKOFF * 0.8 <= waits[0] <= MIN_BACKOFF
    assert max(waits) <= MAX_BACKOFF == 300.0
    assert waits[-1] >= MAX_BACKOFF * 0.99
    c._failures.clear()
    for _ in range(50):
        decide(c, check, Outcome("unknown", "not_found"), t)
    assert c._due[IMAGE] - time.monotonic() > 3000  # doubled up to the 1 h interval
    c.close()


def test_metrics_show_the_verdict_and_no_placeholder_dates() -> None:
    """While unknown, docker_image_upstream_drift and the container's drift say what was
    decided; a reproducible build's placeholder date (1980) is no build time for an update's
    maturity: the created timestamps are absent, so the maturity alerts cannot fire on it."""
    from exporter.collectors.upstream import UpstreamCollector
    from exporter.collectors.versions import VersionsCollector
    from exporter.snapshots import (
        Container,
        EngineSnapshot,
        Image,
        ImageVersions,
        UpstreamSnapshot,
        VersionsSnapshot,
    )
    from exporter.sources.loop import Source

    image = Image("sha256:old", (IMAGE,), (), 1000, 1.7e9, None, 1)
    engine = EngineSnapshot((image,), (Container("c1", "app", IMAGE, "sha256:old", "running",
                                                 1.7e9, stale=False),), "1.41")
    states = {"unknown": TagState(IMAGE, "sha256:old", "unknown", "unreachable",
                                  upstream_config="sha256:newcfg", checked=1.7e9,
                                  decided="drifted", created=315532800.0),
              "never decided": TagState(IMAGE, "sha256:old", "unknown", "unreachable")}
    for case, state in states.items():
        up = UpstreamSnapshot((state,))
        sources = Source("engine", lambda: engine, 60), Source("upstream", lambda u=up: u, 60)
        sources[0].snapshot, sources[1].snapshot = engine, up
        got = {(f.name, s.labels.get("container", "")): s.value for f in UpstreamCollector(
            sources[1], sources[0], 60).collect() for s in f.samples}
        drift = 1.0 if case == "unknown" else None
        assert got.get(("docker_image_upstream_drift", "")) == drift, case
        assert got.get(("docker_container_upstream_drift", "app")) == drift, case
        assert ("docker_image_upstream_created_timestamp_seconds", "") not in got, case
        assert got[("docker_image_upstream_status", "")] in (0, 1)

    versions = VersionsSnapshot((ImageVersions("app:1.0.0", "1.0.0", "1.1.0", 1, 315532800.0),
                                 ImageVersions("web:1.0.0", "1.0.0", "1.2.0", 2, 1.7e9)), ())
    source = Source("versions", lambda: versions, 60)
    source.snapshot = versions
    created = {s.labels["image"]: s.value for f in VersionsCollector(source, 60).collect()
               if f.name == "docker_image_newer_version_created_timestamp_seconds"
               for s in f.samples}
    assert created == {"web:1.0.0": 1.7e9}


def test_a_tick_publishes_what_is_decided_and_says_checks_are_still_busy(
        tmp_path: Path) -> None:
    """A check that outlasts the tick's wait leaves the loop busy (it then ticks again soon,
    ``BUSY_TICK``); once it ends, the verdict is there and the loop is idle; its verdict
    reaches the file with the tick's flush, in one commit."""
    import threading

    from exporter.sources.upstream import PUBLISH_WAIT

    path = str(tmp_path / "state.db")
    store, release = StateStore(path), threading.Event()

    class Slow(Scripted):
        def __call__(self, t: Target) -> Outcome:
            release.wait(30)
            return Outcome("current", digest="sha256:pulled")

    c = Checks(lambda: [target()], Slow(), local_record(store), Counters, 3600.0, 4, 2,
               forget=store.forget_upstream, flush=store.flush)
    try:
        started = time.monotonic()
        first = c.run()
        assert PUBLISH_WAIT <= time.monotonic() - started < PUBLISH_WAIT + 1
        assert first.states == () and c.busy()
        release.set()
        deadline = time.monotonic() + 10
        while c.busy() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not c.busy()
        before = StateStore(path)
        assert before.verdict(IMAGE) is None  # not written yet: the next tick's flush does
        before.close()
        second = c.run()
        assert [s.status for s in second.states] == ["current"] and not c.busy()
        again = StateStore(path)
        assert again.verdict(IMAGE) is not None
        again.close()
    finally:
        c.close()
        store.close()


def test_the_scheduler_keeps_both_limits_and_a_slow_registry_holds_up_no_other(
        tmp_path: Path) -> None:
    """4 checks in flight at most, 2 a registry, round robin: a registry whose checks take
    50 ms holds no more than its 2 slots, while two fast ones are done long before it; every
    tag is checked once, on at most 4 threads (a worker goes on with the next check itself,
    no hand-off a check). Which registry has how many of the 4 at a moment is timing's."""
    import threading
    from collections import Counter

    lock = threading.Lock()
    running: Counter[str] = Counter()
    peak: Counter[str] = Counter()
    checked: Counter[str] = Counter()
    finished: dict[str, float] = {}
    threads: set[int] = set()

    class Timed(Scripted):
        def __call__(self, t: Target) -> Outcome:
            with lock:
                running[t.registry] += 1
                running["all"] += 1
                for key in (t.registry, "all"):
                    peak[key] = max(peak[key], running[key])
                threads.add(threading.get_ident())
            time.sleep(0.05 if t.registry.startswith("slow") else 0.001)
            with lock:
                running[t.registry] -= 1
                running["all"] -= 1
                checked[t.image] += 1
                finished[t.registry] = time.monotonic()
            return Outcome("current", digest="sha256:pulled")

    def tag(registry: str, i: int) -> Target:
        ref = reference.parse(f"{registry}/app:{i}")
        return Target(ref.familiar(), ref, "sha256:old", frozenset({"sha256:pulled"}))

    targets = [tag(r, i) for i in range(40) for r in ("fast1.test", "fast2.test")] + \
        [tag("slow.test", i) for i in range(10)]
    store = StateStore(str(tmp_path / "state.db"))
    c = Checks(lambda: targets, Timed(), local_record(store), Counters, 3600.0, 4, 2,
               forget=store.forget_upstream, flush=store.flush)
    try:
        snapshot = c.cycle()
    finally:
        c.close()
        store.close()
    assert len(snapshot.states) == len(targets) == len(checked)
    assert set(checked.values()) == {1}
    assert peak["all"] == 4
    assert max(peak[r] for r in ("slow.test", "fast1.test", "fast2.test")) == 2
    assert len(threads) <= 4
    # The slow registry's 10 checks take 5 rounds of 50 ms on its 2 slots; the fast ones,
    # 80 checks of 1 ms on the other 2 slots, are done in well under that.
    assert max(finished["fast1.test"], finished["fast2.test"]) < finished["slow.test"] - 0.1
