"""Registry header parsing and the pieces of the drift decision that need no registry."""

from __future__ import annotations

import json

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from exporter.decisions.drift import container_drift
from exporter.registry.client import parse_challenge, parse_ratelimit, parse_retry_after
from exporter.registry.manifest import DOCKER_LIST, OCI_MANIFEST, Manifest, Platform, RegistryError


def test_bearer_challenge() -> None:
    scheme, params = parse_challenge(
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
        'scope="repository:library/busybox:pull",error="insufficient_scope"')
    assert scheme == "bearer"
    assert params == {"realm": "https://auth.docker.io/token", "service": "registry.docker.io",
                      "scope": "repository:library/busybox:pull", "error": "insufficient_scope"}


def test_basic_challenge_and_quoting() -> None:
    assert parse_challenge('Basic realm="a \\"quoted\\", realm"') == (
        "basic", {"realm": 'a "quoted", realm'})
    assert parse_challenge("Bearer realm=https://x/token, service=reg") == (
        "bearer", {"realm": "https://x/token", "service": "reg"})


@pytest.mark.parametrize(("header", "value"), [
    ("100;w=21600", 100), ("76;w=21600", 76), ("0", 0), (" 5 ", 5), ("", None), (None, None),
    ("many", None), ("-1;w=1", None),
])
def test_ratelimit(header, value) -> None:
    assert parse_ratelimit(header) == value


def test_retry_after() -> None:
    assert parse_retry_after("120") == 120
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412480 - 30) == 30
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412480 + 30) == 0
    assert parse_retry_after("soon") is None
    assert parse_retry_after("999999999") == 86400


@given(st.text(max_size=300))
@example("¹")  # str.isdigit() says yes, int() says no: found by this test in CI
def test_fuzzed_headers_never_raise(text: str) -> None:
    scheme, params = parse_challenge(text)
    assert isinstance(scheme, str) and isinstance(params, dict)
    parse_ratelimit(text)
    parse_retry_after(text)


def _index(entries: list[tuple[str, str, str]]) -> Manifest:
    body = json.dumps({"schemaVersion": 2, "mediaType": DOCKER_LIST, "manifests": [
        {"digest": d, "platform": {"os": o, "architecture": a}} for d, o, a in entries]})
    return Manifest("sha256:" + "0" * 64, DOCKER_LIST, body.encode())


def test_platform_entry_selection() -> None:
    amd, arm = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    index = _index([(arm, "linux", "arm64"), (amd, "linux", "amd64"),
                    ("sha256:" + "c" * 64, "unknown", "unknown")])
    assert index.is_index
    assert index.platform_digest(Platform("linux", "amd64")) == amd
    assert index.platform_digest(Platform("linux", "arm64", "v8")) == arm
    assert index.platform_digest(Platform("windows", "amd64")) is None


def test_manifest_config_and_garbage() -> None:
    m = Manifest("sha256:" + "d" * 64, OCI_MANIFEST,
                 json.dumps({"config": {"digest": "sha256:" + "e" * 64}}).encode())
    assert not m.is_index and m.config_digest() == "sha256:" + "e" * 64
    with pytest.raises(RegistryError) as err:
        Manifest("sha256:" + "f" * 64, "", b"\x00garbage").is_index  # noqa: B018
    assert err.value.reason == "bad_response"


def test_container_drift_rules() -> None:
    tag, old, new_config = "sha256:tag", "sha256:old", "sha256:new"
    assert container_drift("current", tag, "", tag) == 0
    assert container_drift("current", tag, "", old) == 1  # re-pulled, not recreated
    assert container_drift("platform_unchanged", tag, tag, tag) == 0
    assert container_drift("drifted", tag, new_config, tag) == 1
    assert container_drift("drifted", tag, new_config, new_config) == 0
    assert container_drift("unknown", tag, "", tag) is None
