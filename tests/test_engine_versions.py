"""Which Engine API version the exporter talks, as a pure function of the daemon's range."""

from __future__ import annotations

import pytest

from exporter.sources.engine import NEWEST_KNOWN_API, EngineError, api_key, negotiate


@pytest.mark.parametrize(("newest", "oldest", "talk"), [
    ("1.41", "1.12", "1.41"),  # Docker 20.10 (Debian)
    ("1.44", "1.24", "1.44"),  # 25.0
    ("1.47", "1.24", "1.47"),  # 27.5
    ("1.48", "1.24", "1.48"),  # 28.0
    ("1.52", "1.44", "1.52"),  # 29.0, 29.1: refuse anything below 1.44
    ("1.53", "1.44", "1.53"),  # 29.2
    ("1.54", "1.40", "1.53"),  # 29.3: newer than this exporter knows, so capped
    ("1.44", "1.44", "1.44"),  # DOCKER_MIN_API_VERSION raised to the newest
    ("1.30", "", "1.30"),  # an old daemon that does not say its minimum
])
def test_negotiated_version(newest: str, oldest: str, talk: str) -> None:
    assert negotiate(newest, oldest) == talk


def test_a_daemon_above_every_known_version_is_a_clear_error() -> None:
    with pytest.raises(EngineError) as err:
        negotiate("1.60", "1.54")
    assert err.value.reason == "unsupported_api"
    assert str(err.value) == ("the Docker daemon accepts API 1.54 to 1.60; "
                              f"this exporter speaks API 1.24 to {NEWEST_KNOWN_API}")


def test_too_old_and_junk() -> None:
    with pytest.raises(EngineError, match=r"accepts API 1\.12 to 1\.23"):
        negotiate("1.23", "1.12")
    for junk in ("", "one.forty"):
        with pytest.raises(EngineError) as err:
            negotiate(junk, "1.12")
        assert err.value.reason == "bad_response"
    assert api_key("1.9") < api_key("1.10")
