"""The request policy on its own, with a fake clock: back-off, Retry-After, slots."""

from __future__ import annotations

import itertools
import threading

import pytest

from exporter.registry.manifest import RegistryError
from exporter.registry.policy import MAX_BACKOFF, RequestPolicy


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_backoff_doubles_from_30s_to_five_minutes_and_survives_any_number_of_failures() -> None:
    clock = Clock()
    policy = RequestPolicy(clock=clock)
    waits = []
    for _ in range(5_001):
        policy.failed("r", RegistryError("unreachable"))
        until, reason = policy.blocked("r")  # type: ignore[misc]
        assert reason == "unreachable"
        waits.append(until - clock.now)
        clock.now = until  # the wait passed
    assert all(b > a for a, b in itertools.pairwise(waits[:4])), waits[:5]
    assert 30 <= waits[0] <= 33 and MAX_BACKOFF <= waits[-1] <= MAX_BACKOFF * 1.1
    policy.succeeded("r")
    policy.failed("r", RegistryError("timeout"))
    assert policy.blocked("r")[0] - clock.now <= 33  # type: ignore[index]


def test_retry_after_is_honoured_and_costs_zero_requests() -> None:
    clock = Clock()
    policy = RequestPolicy(clock=clock)
    policy.failed("r", RegistryError("rate_limited", retry_after=3600))
    until, _ = policy.blocked("r")  # type: ignore[misc]
    assert 3600 <= until - clock.now <= 3960
    with pytest.raises(RegistryError) as err, policy.admit("r"):
        raise AssertionError("admitted while in back-off")
    assert err.value.reason == "rate_limited" and err.value.retry_at == until
    clock.now = until + 1
    with policy.admit("r"):
        pass


def test_failures_of_the_content_do_not_block_the_registry() -> None:
    policy = RequestPolicy()
    for reason in ("not_found", "bad_response", "auth_failed", "no_platform"):
        policy.failed("r", RegistryError(reason))
    assert policy.blocked("r") is None


def test_slots_per_registry_and_in_all() -> None:
    policy = RequestPolicy(concurrency=3, per_host=2, timeout=0.2)
    release = threading.Event()
    entered = threading.Semaphore(0)

    def hold(host: str) -> None:
        with policy.admit(host):
            entered.release()
            release.wait(5)

    holders = [threading.Thread(target=hold, args=(h,)) for h in ("a", "a", "b")]
    for t in holders:
        t.start()
    for _ in holders:
        assert entered.acquire(timeout=5)
    # "a" has both its slots taken, and all three slots are taken: both refuse in time.
    for host in ("a", "c"):
        with pytest.raises(RegistryError) as err, policy.admit(host):
            pass
        assert err.value.reason == "timeout"
    release.set()
    for t in holders:
        t.join()
    with policy.admit("a"), policy.admit("a"):
        pass


def test_counters() -> None:
    policy = RequestPolicy()
    policy.count("r", "HEAD", "200")
    policy.count("r", "HEAD", "200")
    policy.count("r", "TOKEN", "429")
    policy.fallback("r")
    policy.ratelimit("r", 100, 76)
    c = policy.counters()
    assert c.requests == ((("r", "HEAD", "200"), 2), (("r", "TOKEN", "429"), 1))
    assert c.digest_fallbacks == (("r", 1),) and c.ratelimits == (("r", 100, 76),)


def test_no_free_slot_is_not_the_registry_failing() -> None:
    """Waiting too long for a slot of our own is our queue, not the registry: the refusal
    says when to try again, and the registry is not put in back-off for it."""
    policy = RequestPolicy(per_host=1, timeout=0.2)
    release, entered = threading.Event(), threading.Event()

    def hold() -> None:
        with policy.admit("r"):
            entered.set()
            release.wait(5)

    holder = threading.Thread(target=hold)
    holder.start()
    assert entered.wait(5)
    with pytest.raises(RegistryError) as err, policy.admit("r"):
        pass
    release.set()
    holder.join()
    assert err.value.reason == "timeout" and err.value.retry_at is not None
    assert policy.blocked("r") is None
