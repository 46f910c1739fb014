"""The one back-off helper: doubling, capped, and finite after any number of failures."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from exporter import backoff


def test_doubles_from_the_base_up_to_the_cap() -> None:
    assert [backoff.delay(n, 1.0, 30.0) for n in range(7)] == [0.0, 1, 2, 4, 8, 16, 30]


def test_a_year_of_failures_waits_the_cap() -> None:
    # 2 ** 1024 overflows a float: the helper must not compute it.
    assert backoff.delay(5_000, 1.0, 15.0) == 15.0
    assert backoff.delay(10 ** 9, 30.0, 3600.0) == 3600.0


@given(st.integers(min_value=0, max_value=10 ** 12),
       st.floats(min_value=1e-3, max_value=1e4), st.floats(min_value=1e-3, max_value=1e6))
def test_always_finite_and_within_the_cap(failures: int, base: float, cap: float) -> None:
    wait = backoff.jittered(backoff.delay(failures, base, cap))
    assert 0.0 <= wait <= cap
