"""Which RepoDigests prove a registry origin, store by store (a pure function)."""

from __future__ import annotations

from exporter.decisions.provenance import (
    CLASSIC,
    CONTAINERD,
    PODMAN,
    registry_digests,
    repository,
)

D = "sha256:" + "a" * 64
HUB_PULLED, HUB_BUILT = f"hygieneorg/tool@{D}", f"mycorp/secret-app@{D}"
PRIVATE, LOCALHOST = f"ghcr.io/org/app@{D}", f"localhost/app@{D}"


def test_repository_names_are_normalised() -> None:
    assert repository(f"busybox@{D}") == "docker.io/library/busybox"
    assert repository("docker.io/library/busybox") == "docker.io/library/busybox"
    assert repository("not a name") == ""


def test_classic_store_trusts_every_repo_digest() -> None:
    every = (HUB_PULLED, HUB_BUILT, PRIVATE, LOCALHOST)
    assert registry_digests(every, CLASSIC, None, ()) == every


def test_podman_local_builds_are_not_from_a_registry() -> None:
    assert registry_digests((LOCALHOST, PRIVATE), PODMAN, None, ()) == (PRIVATE,)


def test_containerd_store_with_the_engines_word() -> None:
    pulled = {"docker.io/hygieneorg/tool"}
    assert registry_digests((HUB_PULLED, HUB_BUILT, PRIVATE), CONTAINERD, pulled, ()) == (
        HUB_PULLED, PRIVATE)
    # The engine's word wins over what was seen: an image it says was built is not asked.
    assert registry_digests((HUB_BUILT,), CONTAINERD, set(), {"docker.io/mycorp/secret-app"}) \
        == ()


def test_containerd_store_without_it_needs_a_pull_seen() -> None:
    assert registry_digests((HUB_PULLED, HUB_BUILT, PRIVATE), CONTAINERD, None, ()) == (
        PRIVATE,)
    assert registry_digests((HUB_PULLED, HUB_BUILT), CONTAINERD, None,
                            {"docker.io/hygieneorg/tool"}) == (HUB_PULLED,)
