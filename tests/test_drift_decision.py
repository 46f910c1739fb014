"""The drift decision as a pure function: documents come from a dictionary, no HTTP."""

from __future__ import annotations

import hashlib
import json

import pytest

from exporter.decisions.drift import (
    Decision,
    Local,
    container_drift,
    decide,
    last_read,
    platform_manifest,
)
from exporter.registry.manifest import OCI_INDEX, OCI_MANIFEST, Manifest, Platform, RegistryError
from exporter.snapshots import ImageManifest

AMD64 = Platform("linux", "amd64")


def _doc(media_type: str, doc: dict) -> Manifest:
    body = json.dumps(doc).encode()
    return Manifest("sha256:" + hashlib.sha256(body).hexdigest(), media_type, body)


def image(config: str) -> Manifest:
    return _doc(OCI_MANIFEST, {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                               "config": {"digest": config, "size": 1}, "layers": []})


def index(**platforms: Manifest) -> Manifest:
    return _doc(OCI_INDEX, {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": m.digest, "size": len(m.body),
         "platform": {"os": "linux", "architecture": arch}} for arch, m in platforms.items()]})


def lookup(*docs: Manifest):
    store = {d.digest: d for d in docs}

    def document(digest: str) -> Manifest:
        if digest not in store:
            raise RegistryError("not_found", digest)
        return store[digest]
    return document


CFG_A, CFG_B, CFG_ARM = ("sha256:" + c * 64 for c in "abc")


def test_current_needs_no_document() -> None:
    def never(digest: str) -> Manifest:
        raise AssertionError("no document should be read")
    assert decide(Local(CFG_A, frozenset({"sha256:" + "1" * 64})), "sha256:" + "1" * 64,
                  AMD64, never) == Decision("current", "sha256:" + "1" * 64)


def test_single_manifest_with_the_local_config_is_platform_unchanged() -> None:
    new = image(CFG_A)  # re-pushed: new manifest digest, same config
    d = decide(Local(CFG_A, frozenset({"sha256:" + "0" * 64})), new.digest, AMD64, lookup(new))
    assert d == Decision("platform_unchanged", new.digest, CFG_A, new.digest)


def test_index_that_gained_a_platform_is_platform_unchanged() -> None:
    amd, arm = image(CFG_A), image(CFG_ARM)
    old, new = index(amd64=amd), index(amd64=amd, arm64=arm)
    # containerd store: the image ID is the old index digest, not the config
    d = decide(Local(old.digest, frozenset({old.digest})), new.digest, AMD64,
               lookup(old, new, amd, arm))
    assert d.status == "platform_unchanged"


def test_rebuilt_platform_is_drifted_and_says_the_new_config() -> None:
    old_amd, new_amd = image(CFG_A), image(CFG_B)
    old, new = index(amd64=old_amd), index(amd64=new_amd)
    d = decide(Local(CFG_A, frozenset({old.digest})), new.digest, AMD64,
               lookup(old, new, old_amd, new_amd))
    assert d == Decision("drifted", new.digest, CFG_B, new_amd.digest)


def test_an_old_index_that_cannot_be_read_does_not_hide_drift() -> None:
    new_amd = image(CFG_B)
    new = index(amd64=new_amd)
    d = decide(Local(CFG_A, frozenset({"sha256:" + "9" * 64})), new.digest, AMD64,
               lookup(new, new_amd))
    assert d.status == "drifted"


def test_index_without_this_platform_is_undecided() -> None:
    new = index(arm64=image(CFG_ARM))
    with pytest.raises(RegistryError) as exc:
        decide(Local(CFG_A, frozenset()), new.digest, AMD64, lookup(new))
    assert exc.value.reason == "no_platform"


# -- containerd image store: the image ID is the index digest; API 1.47+ says which platform
# -- manifest the host has (Manifests), and 1.48+ which one a container runs.

def test_containerd_index_that_only_gained_a_platform_is_platform_unchanged() -> None:
    amd, arm = image(CFG_A), image(CFG_ARM)
    old, new = index(amd64=amd), index(amd64=amd, arm64=arm)
    # The old index is gone from the registry: the host's platform manifest decides alone.
    d = decide(Local(old.digest, frozenset({old.digest}), amd.digest), new.digest, AMD64,
               lookup(new, amd, arm))
    assert d == Decision("platform_unchanged", new.digest, CFG_A, amd.digest)


def test_containerd_other_platform_rebuilt_is_platform_unchanged() -> None:
    amd, arm, arm2 = image(CFG_A), image(CFG_ARM), image(CFG_B)
    old, new = index(amd64=amd, arm64=arm), index(amd64=amd, arm64=arm2)
    d = decide(Local(old.digest, frozenset({old.digest}), amd.digest), new.digest, AMD64,
               lookup(new, amd, arm2))
    assert d.status == "platform_unchanged"


def test_containerd_rebuilt_platform_is_drifted_though_the_old_index_is_readable() -> None:
    old_amd, new_amd, arm = image(CFG_A), image(CFG_B), image(CFG_ARM)
    old, new = index(amd64=old_amd, arm64=arm), index(amd64=new_amd, arm64=arm)
    d = decide(Local(old.digest, frozenset({old.digest}), old_amd.digest), new.digest, AMD64,
               lookup(old, new, old_amd, new_amd, arm))
    assert d == Decision("drifted", new.digest, CFG_B, new_amd.digest)


def test_containerd_repushed_manifest_with_the_same_config_is_platform_unchanged() -> None:
    amd = image(CFG_A)
    repushed = _doc(OCI_MANIFEST, {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                                   "config": {"digest": CFG_A, "size": 1}, "layers": [],
                                   "annotations": {"re": "pushed"}})
    old, new = index(amd64=amd), index(amd64=repushed)
    local = Local(old.digest, frozenset({old.digest}), amd.digest)
    assert decide(local, new.digest, AMD64, lookup(new, amd, repushed)).status == \
        "platform_unchanged"
    # The host's manifest cannot be read any more: its config is unknown, so drifted.
    assert decide(local, new.digest, AMD64, lookup(new, repushed)).status == "drifted"


def test_containerd_single_manifest_image_id_is_the_manifest_digest() -> None:
    old, new = image(CFG_A), image(CFG_B)
    d = decide(Local(old.digest, frozenset({old.digest}), old.digest), new.digest, AMD64,
               lookup(old, new))
    assert d == Decision("drifted", new.digest, CFG_B, new.digest)


def test_current_says_the_hosts_platform_manifest() -> None:
    amd = image(CFG_A)
    idx = index(amd64=amd)
    d = decide(Local(idx.digest, frozenset({idx.digest}), amd.digest), idx.digest, AMD64,
               lookup())
    assert d == Decision("current", idx.digest, "", amd.digest)


def test_platform_manifest_is_the_available_one_for_the_platform() -> None:
    def m(digest: str, arch: str, variant: str = "", available: bool = True) -> ImageManifest:
        return ImageManifest("sha256:" + digest * 64, "linux", arch, variant, available)

    manifests = (m("1", "arm64", "v8", available=False), m("2", "amd64"),
                 m("3", "arm", "v6"), m("4", "arm", "v7"), m("5", "arm64"))
    assert platform_manifest(manifests, AMD64) == "sha256:" + "2" * 64
    assert platform_manifest(manifests, Platform("linux", "arm", "v7")) == "sha256:" + "4" * 64
    # Not on this host in full: not what the host has.
    assert platform_manifest(manifests, Platform("linux", "arm64", "v8")) == "sha256:" + "5" * 64
    assert platform_manifest(manifests, Platform("linux", "s390x")) == ""
    assert platform_manifest((), AMD64) == ""


def test_container_drift_by_platform_manifest() -> None:
    old_index, new_index = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    m1, m2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64
    # Re-pulled index that only gained a platform: another image ID, the same manifest.
    assert container_drift("current", new_index, "", old_index, m1, m1, m1) == 0
    # Re-pulled index whose platform was rebuilt: the container runs the old manifest.
    assert container_drift("current", new_index, "", old_index, m2, m2, m1) == 1
    assert container_drift("platform_unchanged", old_index, CFG_A, old_index, m1, m2, m1) == 0
    assert container_drift("drifted", old_index, CFG_B, old_index, m1, m2, m1) == 1
    assert container_drift("drifted", old_index, CFG_B, new_index, m1, m2, m2) == 0
    # Unknown manifests (classic store): image IDs decide, as before.
    assert container_drift("current", new_index, "", old_index) == 1
    assert container_drift("unknown", new_index, "", old_index, m1, m1, m1) is None


# -- which documents each store kind costs: the classic store's image ID is the config digest,
# -- so a moved index costs the index and this platform's manifest, never the old index.

def recording(*docs: Manifest) -> tuple[list[str], object]:
    """A lookup that records the digests asked for, in order."""
    asked: list[str] = []
    inner = lookup(*docs)

    def document(digest: str) -> Manifest:
        asked.append(digest)
        return inner(digest)
    return asked, document


def _moved(rebuilt: bool) -> tuple[Manifest, Manifest, Manifest, Manifest, Manifest]:
    """An index whose arm64 entry was rebuilt, and whose amd64 entry too when ``rebuilt``."""
    old_amd, arm, arm2 = image(CFG_A), image(CFG_ARM), image("sha256:" + "d" * 64)
    new_amd = image(CFG_B) if rebuilt else old_amd
    return old_amd, new_amd, index(amd64=old_amd, arm64=arm), index(amd64=new_amd, arm64=arm2), arm2


@pytest.mark.parametrize("rebuilt", [True, False])
def test_classic_store_reads_the_index_and_the_platform_manifest_only(rebuilt: bool) -> None:
    old_amd, new_amd, old, new, arm2 = _moved(rebuilt)
    asked, document = recording(old, new, old_amd, new_amd, arm2)
    local = Local(CFG_A, frozenset({old.digest}), store="classic")
    d = decide(local, new.digest, AMD64, document)
    assert d == Decision("drifted" if rebuilt else "platform_unchanged", new.digest,
                         new_amd.config_digest(), new_amd.digest)
    assert asked == [new.digest, new_amd.digest]  # never the old index
    assert last_read(local, new.digest, new_amd.digest)
    assert not last_read(local, new.digest, new.digest)  # a single manifest is not known yet


def test_classic_store_image_pulled_for_another_platform_is_judged_by_its_config() -> None:
    """An image pulled with --platform linux/arm64 on an amd64 host: its ID is the arm64
    config, never amd64's; a moved tag is drifted, though this platform's entry stayed."""
    old_amd, _, old, new, _ = _moved(False)
    asked, document = recording(old, new, old_amd)
    local = Local(CFG_ARM, frozenset({old.digest}), store="classic")
    assert decide(local, new.digest, AMD64, document).status == "drifted"
    assert asked == [new.digest, old_amd.digest]
    # Where the store is not known, the old index still decides it.
    asked, document = recording(old, new, old_amd)
    assert decide(Local(CFG_ARM, frozenset({old.digest})), new.digest, AMD64,
                  document).status == "platform_unchanged"
    assert asked == [new.digest, old_amd.digest, old.digest]


@pytest.mark.parametrize("store", ["containerd", "podman", ""])
def test_other_stores_without_platform_manifests_compare_the_old_index(store: str) -> None:
    """The containerd store before API 1.47 (image ID: the index digest), Podman, or a store
    not known: the platform entry of the index this host pulled decides."""
    for rebuilt in (True, False):
        old_amd, new_amd, old, new, arm2 = _moved(rebuilt)
        asked, document = recording(old, new, old_amd, new_amd, arm2)
        local = Local(old.digest, frozenset({old.digest}), store=store)
        d = decide(local, new.digest, AMD64, document)
        assert d.status == ("drifted" if rebuilt else "platform_unchanged")
        assert asked == [new.digest, new_amd.digest, old.digest]
        assert not last_read(local, new.digest, new_amd.digest)


def test_containerd_store_with_platform_manifests_reads_no_old_index() -> None:
    old_amd, new_amd, old, new, arm2 = _moved(True)
    asked, document = recording(old, new, old_amd, new_amd, arm2)
    local = Local(old.digest, frozenset({old.digest}), old_amd.digest, store="containerd")
    assert decide(local, new.digest, AMD64, document).status == "drifted"
    # The host's own manifest, for its config (a re-push with the same config is unchanged).
    assert asked == [new.digest, new_amd.digest, old_amd.digest]
    assert not last_read(local, new.digest, new_amd.digest)
    # The classic-store shortcut never applies where the engine names platform manifests.
    assert not last_read(Local(old.digest, frozenset({old.digest}), old_amd.digest,
                               store="classic"), new.digest, new_amd.digest)


def test_classic_store_single_manifest_reads_it_alone() -> None:
    old, new = image(CFG_A), image(CFG_B)
    asked, document = recording(old, new)
    d = decide(Local(CFG_A, frozenset({old.digest}), store="classic"), new.digest, AMD64,
               document)
    assert d == Decision("drifted", new.digest, CFG_B, new.digest)
    assert asked == [new.digest]
