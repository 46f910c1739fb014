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
