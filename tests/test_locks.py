"""KeyedLocks: one key held for ever (a registry that hangs) never delays another key."""

from __future__ import annotations

import threading
import time

import pytest

from exporter.locks import KeyedLocks


def test_a_key_held_for_ever_delays_no_other_key() -> None:
    locks = KeyedLocks()
    release, held = threading.Event(), threading.Event()

    def hang() -> None:
        with locks.hold("hung-registry"):
            held.set()
            release.wait(30)

    t = threading.Thread(target=hang)
    t.start()
    assert held.wait(5)
    try:
        # Far more keys than any stripe count: each is taken at once.
        started = time.monotonic()
        for n in range(5000):
            with locks.hold(f"registry-{n}"):
                pass
        assert time.monotonic() - started < 5
        assert len(locks) == 1  # only the hung key is kept
    finally:
        release.set()
        t.join()
    assert len(locks) == 0


def test_the_same_key_waits_for_its_holder() -> None:
    locks = KeyedLocks()
    order: list[str] = []
    inside = threading.Event()

    def first() -> None:
        with locks.hold("k"):
            inside.set()
            time.sleep(0.3)
            order.append("first")

    t = threading.Thread(target=first)
    t.start()
    assert inside.wait(5)
    with locks.hold("k"):
        order.append("second")
    t.join()
    assert order == ["first", "second"]
    assert len(locks) == 0


def test_nothing_is_left_behind_after_an_exception() -> None:
    locks = KeyedLocks()
    for n in range(100):
        with pytest.raises(RuntimeError), locks.hold(n % 7):
            raise RuntimeError("the fetch failed")
    assert len(locks) == 0
    with locks.hold(3):  # and the key can be taken again
        pass
