"""Reference normalisation, as the engine does it."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exporter import reference
from exporter.reference import ReferenceError, parse

DIGEST = "sha256:" + "a" * 64


@pytest.mark.parametrize(("text", "name", "tag", "digest", "familiar"), [
    ("busybox", "docker.io/library/busybox", "latest", None, "busybox:latest"),
    ("busybox:1.36", "docker.io/library/busybox", "1.36", None, "busybox:1.36"),
    ("library/busybox", "docker.io/library/busybox", "latest", None, "busybox:latest"),
    ("docker.io/busybox", "docker.io/library/busybox", "latest", None, "busybox:latest"),
    ("index.docker.io/library/busybox:1", "docker.io/library/busybox", "1", None, "busybox:1"),
    ("registry-1.docker.io/grafana/grafana", "docker.io/grafana/grafana", "latest", None,
     "grafana/grafana:latest"),
    ("grafana/grafana:10.2", "docker.io/grafana/grafana", "10.2", None, "grafana/grafana:10.2"),
    ("localhost/app", "localhost/app", "latest", None, "localhost/app:latest"),
    ("localhost:5000/team/app:v1", "localhost:5000/team/app", "v1", None,
     "localhost:5000/team/app:v1"),
    ("127.0.0.1:5000/app", "127.0.0.1:5000/app", "latest", None, "127.0.0.1:5000/app:latest"),
    ("ghcr.io/org/app:1.0", "ghcr.io/org/app", "1.0", None, "ghcr.io/org/app:1.0"),
    (f"busybox@{DIGEST}", "docker.io/library/busybox", None, DIGEST, f"busybox@{DIGEST}"),
    (f"quay.io/a/b:1@{DIGEST}", "quay.io/a/b", "1", DIGEST, f"quay.io/a/b:1@{DIGEST}"),
    ("[::1]:5000/app:2", "[::1]:5000/app", "2", None, "[::1]:5000/app:2"),
    ("a.b/c__d/e-f.g:tag_1.x-y", "a.b/c__d/e-f.g", "tag_1.x-y", None, "a.b/c__d/e-f.g:tag_1.x-y"),
])
def test_normalisation(text, name, tag, digest, familiar) -> None:
    ref = parse(text)
    assert (ref.name, ref.tag, ref.digest) == (name, tag, digest)
    assert ref.familiar() == familiar


@pytest.mark.parametrize("text", [
    "", "Busybox", "busybox:", ":tag", "busybox@sha256:short", "a//b", "-a", "a:" + "t" * 129,
    "sha256:" + "b" * 64, "b" * 64, "host:port/app", "x" * 5000,
])
def test_invalid(text) -> None:
    with pytest.raises(ReferenceError):
        parse(text)


def test_familiar_leaves_non_references_alone() -> None:
    assert reference.familiar("sha256:" + "c" * 64) == "sha256:" + "c" * 64
    assert reference.familiar("docker.io/library/busybox") == "busybox:latest"


@given(st.text(max_size=300))
def test_fuzzed_references_parse_or_raise_reference_error(text: str) -> None:
    try:
        ref = parse(text)
    except ReferenceError:
        return
    # Whatever parses is stable: its canonical form parses to itself.
    assert parse(str(ref)) == ref
