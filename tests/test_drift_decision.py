"""The drift decision as a pure function: documents come from a dictionary, no HTTP."""

from __future__ import annotations

import hashlib
import json

import pytest

from exporter.decisions.drift import Decision, Local, decide
from exporter.registry.manifest import OCI_INDEX, OCI_MANIFEST, Manifest, Platform, RegistryError

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
    assert d == Decision("platform_unchanged", new.digest, CFG_A)


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
    assert d == Decision("drifted", new.digest, CFG_B)


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
