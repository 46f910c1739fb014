"""Signatures as OCI 1.1 clients publish them.

What counts as a signature is pinned by table (every spelling cosign, sigstore and notation
write; attestations and SBOMs that must not count). Then, through the exporter process,
against the real registry (Distribution 2.8, which has no referrers API, so clients keep the
referrers tag schema ``sha256-<hex>``), and through a stand-in for the referrers API in
front of it.

Who publishes what: oras-py, a real OCI client, uploads every blob and pushes every
manifest, with its ``subject`` and ``artifactType`` (notation's through its high-level
``push``). oras-py does not keep the referrers tag schema, which cosign 3 (through
go-containerregistry), notation and the oras CLI do on a registry without the referrers
API; ``update_referrers_index`` below does that part by hand, as the distribution spec's
"Pushing Manifests with Subject" tells clients to. cosign and notation themselves are not
installable here (no Debian or PyPI package). The shapes are those cosign's ``WriteReferrer``
and notation's signature specification give; the signature bytes are dummies, as the
exporter checks presence only.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import oras.client
import oras.oci
import pytest

from exporter.decisions import signatures as sig
from exporter.decisions.signatures import Verdict
from exporter.registry.manifest import RegistryError
from exporter.registry.signatures import SignatureFinder
from tests.registries import (
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    FaultProxy,
    registry_requests,
)
from tests.services import Dockerd, Metrics, Registry
from tests.test_upstream import push_version

FAST = ("--upstream.interval", "2s", "--collector.engine.interval", "1s",
        "--collector.disk.interval", "1h", "--versions.enabled", "false")

NOTATION = "application/vnd.cncf.notary.signature"
COSIGN_OCI11 = "application/vnd.dev.cosign.artifact.sig.v1+json"
SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
BUNDLE = "application/vnd.dev.sigstore.bundle.v0.3+json"
EMPTY = "application/vnd.oci.empty.v1+json"
SIGN = "https://sigstore.dev/cosign/sign/v1"
SLSA = "https://slsa.dev/provenance/v1"
SPDX_PREDICATE = "https://spdx.dev/Document"
SUBJECT = "sha256:" + "ab" * 32


def bundle_annotations(predicate: str) -> dict[str, str]:
    """The annotations cosign 3 puts on a bundle referrer (WriteAttestationNewBundleFormat)."""
    return {"dev.sigstore.bundle.content": "dsse-envelope",
            "dev.sigstore.bundle.predicateType": predicate,
            "org.opencontainers.image.created": "2026-01-01T00:00:00Z"}


# -- what the descriptor says ---------------------------------------------------------------

@pytest.mark.parametrize("artifact_type, annotations, verdict", [
    # Notation (Notary Project 1.x), and its pre-1.0 prototypes.
    (NOTATION, {}, Verdict.SIGNED),
    ("application/vnd.cncf.notary.v2.signature", {}, Verdict.SIGNED),
    # cosign's OCI 1.1 mode (config media type as artifactType).
    (COSIGN_OCI11, {}, Verdict.SIGNED),
    # Sigstore bundles, every spelling sigstore-go reads, with cosign's signing predicate.
    (BUNDLE, bundle_annotations(SIGN), Verdict.SIGNED),
    ("application/vnd.dev.sigstore.bundle+json;version=0.1", bundle_annotations(SIGN),
     Verdict.SIGNED),
    ("application/vnd.dev.sigstore.bundle+json;version=0.2", bundle_annotations(SIGN),
     Verdict.SIGNED),
    ("application/vnd.dev.sigstore.bundle+json;version=0.3", bundle_annotations(SIGN),
     Verdict.SIGNED),
    ("application/vnd.dev.sigstore.bundle+json; version=0.3", bundle_annotations(SIGN),
     Verdict.SIGNED),
    ("application/vnd.dev.sigstore.bundle+json", bundle_annotations(SIGN), Verdict.SIGNED),
    ("application/vnd.dev.sigstore.bundle.v0.4+json", bundle_annotations(SIGN),
     Verdict.SIGNED),
    ("Application/Vnd.Dev.Sigstore.Bundle.v0.3+JSON", bundle_annotations(SIGN),
     Verdict.SIGNED),
    # A plain message signature in a bundle (BUNDLE_SPEC allows it).
    (BUNDLE, {"dev.sigstore.bundle.content": "message-signature"}, Verdict.SIGNED),
    # Attestations: the same bundle type, another predicate.
    (BUNDLE, bundle_annotations(SLSA), Verdict.NOT),
    (BUNDLE, bundle_annotations(SPDX_PREDICATE), Verdict.NOT),
    (BUNDLE, bundle_annotations("https://cyclonedx.org/bom"), Verdict.NOT),
    (BUNDLE, bundle_annotations("https://cosign.sigstore.dev/attestation/v1"), Verdict.NOT),
    ("application/vnd.dev.sigstore.bundle+json;version=0.3", bundle_annotations(SLSA),
     Verdict.NOT),
    # A bundle that does not say which: its manifest decides.
    (BUNDLE, {}, Verdict.LOOK),
    (BUNDLE, {"dev.sigstore.bundle.content": "dsse-envelope"}, Verdict.LOOK),
    # SBOMs and attestations of other kinds.
    ("application/spdx+json", {}, Verdict.NOT),
    ("text/spdx", {}, Verdict.NOT),
    ("application/vnd.cyclonedx+json", {}, Verdict.NOT),
    ("application/vnd.cyclonedx+xml", {}, Verdict.NOT),
    ("application/vnd.syft+json", {}, Verdict.NOT),
    ("application/vnd.in-toto+json", {}, Verdict.NOT),
    ("application/vnd.dev.cosign.artifact.att.v1+json", {}, Verdict.NOT),
    ("application/vnd.dev.cosign.artifact.sbom.v1+json", {}, Verdict.NOT),
    ("application/vnd.dev.sigstore.bundlex+json", bundle_annotations(SIGN), Verdict.NOT),
    ("application/vnd.example.unknown+json", bundle_annotations(SIGN), Verdict.NOT),
    # Types that name no kind of artifact (go-containerregistry < 0.22.1 fallback indexes,
    # skopeo's rewritten ones): the manifest decides.
    ("", {}, Verdict.LOOK),
    (None, {}, Verdict.LOOK),
    (EMPTY, {}, Verdict.LOOK),
    ("application/vnd.oci.image.config.v1+json", {}, Verdict.LOOK),
    ("application/vnd.unknown.config.v1+json", {}, Verdict.LOOK),
])
def test_descriptor(artifact_type: str | None, annotations: dict, verdict: Verdict) -> None:
    entry: dict[str, Any] = {"mediaType": OCI_MANIFEST, "digest": "sha256:" + "1" * 64,
                             "size": 500}
    if artifact_type is not None:
        entry["artifactType"] = artifact_type
    if annotations:
        entry["annotations"] = annotations
    assert sig.descriptor(entry) is verdict


def test_descriptor_without_artifact_type_with_annotations() -> None:
    """skopeo rewrites an index without artifactType but keeps annotations: still a look."""
    assert sig.descriptor({"digest": "sha256:" + "1" * 64,
                           "annotations": {"io.cncf.notary.x509chain.thumbprint#S256": "[]"}}
                          ) is Verdict.LOOK
    # Not a mapping of annotations: as none.
    assert sig.descriptor({"artifactType": BUNDLE, "annotations": ["x"]}) is Verdict.LOOK


# -- what the manifest says -----------------------------------------------------------------

def artifact(artifact_type: str | None, config_type: str = EMPTY,
             layers: tuple[str, ...] = (), annotations: Mapping[str, str] | None = None,
             subject: str | None = SUBJECT) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": config_type, "digest": "sha256:" + "4" * 64, "size": 2},
        "layers": [{"mediaType": t, "digest": "sha256:" + "5" * 64, "size": 9} for t in layers]}
    if artifact_type is not None:
        doc["artifactType"] = artifact_type
    if annotations:
        doc["annotations"] = dict(annotations)
    if subject:
        doc["subject"] = {"mediaType": DOCKER_MANIFEST, "digest": subject, "size": 700}
    return doc


@pytest.mark.parametrize("doc, signed", [
    # cosign 3: a bundle with its annotations on the manifest.
    (artifact(BUNDLE, layers=(BUNDLE,), annotations=bundle_annotations(SIGN)), True),
    (artifact(BUNDLE, layers=(BUNDLE,), annotations=bundle_annotations(SLSA)), False),
    # A bundle layer in a manifest without artifactType.
    (artifact(None, layers=(BUNDLE,), annotations=bundle_annotations(SIGN)), True),
    (artifact(None, layers=(BUNDLE,), annotations=bundle_annotations(SPDX_PREDICATE)), False),
    # A bundle that nowhere says which predicate: as likely an attestation, not counted.
    (artifact(BUNDLE, layers=(BUNDLE,)), False),
    # Notation: the config media type (1.0), or artifactType with the empty config (1.1).
    (artifact(None, config_type=NOTATION, layers=("application/jose+json",)), True),
    (artifact(NOTATION, layers=("application/cose",)), True),
    # cosign's OCI 1.1 mode; any simple-signing layer.
    (artifact(None, config_type=COSIGN_OCI11, layers=(SIMPLE_SIGNING,)), True),
    (artifact(None, config_type="application/vnd.oci.image.config.v1+json",
              layers=(SIMPLE_SIGNING,)), True),
    # SBOMs, in-toto attestations, a plain image.
    (artifact("application/spdx+json", layers=("application/spdx+json",)), False),
    (artifact("application/vnd.cyclonedx+json", layers=("application/vnd.cyclonedx+json",)),
     False),
    (artifact("application/vnd.in-toto+json",
              layers=("application/vnd.dsse.envelope.v1+json",)), False),
    (artifact(None, config_type="application/vnd.oci.image.config.v1+json",
              layers=("application/vnd.oci.image.layer.v1.tar+gzip",)), False),
    # A signature of another digest (the tag schema's index is written by clients).
    (artifact(NOTATION, subject="sha256:" + "cd" * 32), False),
    # No subject at all: what the index says is taken.
    (artifact(NOTATION, subject=None), True),
    # An index as a referrer, and junk.
    ({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}, False),
    ({"config": "x", "layers": "y", "annotations": 3}, False),
    ({"layers": [None, 1, {"mediaType": 5}]}, False),
])
def test_manifest(doc: dict[str, Any], signed: bool) -> None:
    assert sig.manifest(doc, SUBJECT) is signed


def test_referrers_index() -> None:
    entries = [{"mediaType": OCI_MANIFEST, "digest": "sha256:" + "1" * 64, "size": 3}]
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [*entries, "junk"]}
    assert sig.referrers_index(OCI_INDEX, index) == entries
    assert sig.referrers_index(OCI_INDEX, {"manifests": entries}) == entries
    # Anything else under the tag means no referrers.
    assert sig.referrers_index(OCI_MANIFEST, index) == []
    assert sig.referrers_index("application/vnd.docker.distribution.manifest.list.v2+json",
                               index) == []
    assert sig.referrers_index(OCI_INDEX, dict(index, mediaType=OCI_MANIFEST)) == []
    assert sig.referrers_index(OCI_INDEX, dict(index, manifests={"a": 1})) == []


def test_tags() -> None:
    """The spec's table for the referrers tag; cosign's tag is never cut."""
    assert sig.referrers_tag("sha256:" + "a" * 64) == "sha256-" + "a" * 64
    assert sig.referrers_tag("sha512:" + "a" * 128) == "sha512-" + "a" * 64
    assert sig.referrers_tag(
        "test+algorithm+using+algorithm+separators+and+lots+of+characters+to+excercise+"
        "overall+truncation:alsoSome=InTheEncodedSectionToShowHyphenReplacementAndLotsAndLots"
        "OfCharactersToExcerciseEncodedTruncation") == \
        "test-algorithm-using-algorithm-s-alsoSome-InTheEncodedSectionToShowHyphenReplacement" \
        "AndLotsAndLot"
    assert sig.cosign_tag("sha256:" + "a" * 64) == "sha256-" + "a" * 64 + ".sig"


def entry(digest_char: str, artifact_type: str | None = EMPTY, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"mediaType": OCI_MANIFEST, "digest": "sha256:" + digest_char * 64,
                           "size": 100, **extra}
    if artifact_type is not None:
        out["artifactType"] = artifact_type
    return out


def test_decide_opens_only_what_descriptors_cannot_tell() -> None:
    documents = {
        "sha256:" + "1" * 64: artifact(BUNDLE, layers=(BUNDLE,),
                                       annotations=bundle_annotations(SLSA)),
        "sha256:" + "2" * 64: artifact(BUNDLE, layers=(BUNDLE,),
                                       annotations=bundle_annotations(SIGN)),
    }
    opened: list[str] = []

    def open_manifest(digest: str) -> dict[str, Any] | None:
        opened.append(digest)
        return documents.get(digest)

    # A signature in a descriptor: nothing opened.
    assert sig.decide([entry("1"), entry("9", NOTATION)], SUBJECT, open_manifest)
    assert opened == []
    # A stale go-containerregistry index: the attestation and then the signature opened.
    assert sig.decide([entry("1"), entry("2")], SUBJECT, open_manifest)
    assert opened == ["sha256:" + "1" * 64, "sha256:" + "2" * 64]
    # SBOMs and attestations that say so are not opened; a listed manifest that is gone
    # (None) is no signature; each digest opened once; a digest that is not one, never.
    opened.clear()
    assert not sig.decide([entry("3", "application/spdx+json"),
                           entry("4", BUNDLE, annotations=bundle_annotations(SLSA)),
                           entry("1"), entry("1"), entry("7", ""),
                           {"artifactType": EMPTY, "digest": "../../v2/_catalog"},
                           {"artifactType": EMPTY}], SUBJECT, open_manifest)
    assert opened == ["sha256:" + "1" * 64, "sha256:" + "7" * 64]
    assert not sig.decide([], SUBJECT, open_manifest)


def test_decide_is_bounded() -> None:
    """At most MAX_OPENED manifests per digest: a signature listed after that many
    undecided entries is not found (and nothing more is asked for)."""
    opened: list[str] = []
    signature = artifact(NOTATION)

    def open_manifest(digest: str) -> dict[str, Any] | None:
        opened.append(digest)
        return signature if digest == "sha256:" + "f" * 64 else artifact(EMPTY)

    undecided = [entry(c) for c in "0123456789abcde"[:sig.MAX_OPENED]]
    assert not sig.decide([*undecided, entry("f")], SUBJECT, open_manifest)
    assert len(opened) == sig.MAX_OPENED == 8
    opened.clear()
    assert sig.decide([*undecided[:-1], entry("f")], SUBJECT, open_manifest)
    assert len(opened) == sig.MAX_OPENED


# -- both places at once: how SignatureFinder.start combines the two look-ups ---------------

def _finder(referred: Any, legacy: Any) -> SignatureFinder:
    """A finder whose two look-ups are ``referred`` and ``legacy`` (a value, an exception to
    raise, or a threading.Event to wait for, then False)."""
    finder = SignatureFinder(None, None, 60)  # type: ignore[arg-type]

    def answer(what: Any) -> Any:
        def look(registry: str, repository: str, digest: str) -> bool:
            if isinstance(what, threading.Event):
                assert what.wait(10)
                return False
            if isinstance(what, BaseException):
                raise what
            return what
        return look
    finder.referred, finder.legacy = answer(referred), answer(legacy)  # type: ignore[method-assign]
    return finder


@pytest.mark.parametrize(("referred", "legacy", "want"), [
    (False, False, False),
    (True, False, True),
    (False, True, True),
    (True, RegistryError("server_error", "500"), True),  # found is found
    (RegistryError("timeout", "slow"), True, True),
    (False, RegistryError("server_error", "500"), "server_error"),
    (RegistryError("rate_limited", "429"), False, "rate_limited"),
])
def test_start_combines_both_look_ups(referred: Any, legacy: Any, want: Any) -> None:
    with ThreadPoolExecutor(2) as pool:
        found = _finder(referred, legacy).start(pool, "r", "repo", SUBJECT)
        if isinstance(want, bool):
            assert found.result(timeout=10) is want
        else:
            with pytest.raises(RegistryError) as exc:
                found.result(timeout=10)
            assert exc.value.reason == want


def test_start_answers_signed_without_waiting_for_the_other() -> None:
    slow = threading.Event()
    with ThreadPoolExecutor(2) as pool:
        found = _finder(True, slow).start(pool, "r", "repo", SUBJECT)
        assert found.result(timeout=5) is True
        slow.set()


def test_start_ends_when_the_pool_is_shut_down() -> None:
    """Queued tasks cancelled, or a pool that takes none: the look-up fails, never hangs."""
    blocker = threading.Event()
    pool = ThreadPoolExecutor(1)
    pool.submit(blocker.wait, 10)  # the only worker is busy: both look-ups queue
    found = _finder(False, False).start(pool, "r", "repo", SUBJECT)
    pool.shutdown(wait=False, cancel_futures=True)
    with pytest.raises(RegistryError):
        found.result(timeout=5)
    blocker.set()
    with pytest.raises(RegistryError):
        _finder(True, True).start(pool, "r", "repo", SUBJECT).result(timeout=5)


# -- publishing as OCI 1.1 clients do -------------------------------------------------------

def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def descriptor_for(manifest: dict[str, Any], digest: str, size: int) -> dict[str, Any]:
    """The descriptor the referrers API (and so the tag schema) lists for a manifest:
    artifactType, else the config's media type; every annotation copied."""
    out: dict[str, Any] = {"mediaType": manifest.get("mediaType", OCI_MANIFEST),
                           "digest": digest, "size": size}
    artifact_type = manifest.get("artifactType") or manifest.get("config", {}).get("mediaType")
    if artifact_type:
        out["artifactType"] = artifact_type
    if manifest.get("annotations"):
        out["annotations"] = dict(manifest["annotations"])
    return out


@dataclass
class Publisher:
    """Pushes referrers to one repository with oras-py; keeps the referrers tag by hand."""

    address: str
    repository: str
    workdir: Path
    client: oras.client.OrasClient = field(init=False)

    def __post_init__(self) -> None:
        self.client = oras.client.OrasClient(hostname=self.address, insecure=True)
        self.client.session.trust_env = False  # loopback only, never a configured proxy
        self.workdir.mkdir(parents=True, exist_ok=True)

    def subject(self, tag: str) -> dict[str, Any]:
        r = httpx.head(f"http://{self.address}/v2/{self.repository}/manifests/{tag}",
                       headers={"Accept": DOCKER_MANIFEST})
        r.raise_for_status()
        return {"mediaType": r.headers["content-type"],
                "digest": r.headers["docker-content-digest"],
                "size": int(r.headers["content-length"])}

    def blob(self, media_type: str, data: bytes) -> dict[str, Any]:
        desc = {"mediaType": media_type, "digest": digest_of(data), "size": len(data)}
        path = self.workdir / desc["digest"].split(":")[1]
        path.write_bytes(data)
        r = self.client.upload_blob(str(path), f"{self.address}/{self.repository}", desc)
        assert r.status_code in (200, 201, 202), r.status_code
        return desc

    def manifest(self, manifest: dict[str, Any], tag: str | None = None) -> dict[str, Any]:
        """Push by digest (as cosign and notation push referrers) or to ``tag``; its
        descriptor. oras-py sends ``json=manifest``: the bytes are json.dumps'."""
        body = json.dumps(manifest).encode()
        reference = f"@{digest_of(body)}" if tag is None else f":{tag}"
        r = self.client.upload_manifest(
            manifest, self.client.get_container(f"{self.address}/{self.repository}{reference}"))
        assert r.status_code == 201, (r.status_code, r.text)
        assert r.headers["docker-content-digest"] == digest_of(body)
        # Distribution 2.8 does not process subjects: no OCI-Subject header, so the client
        # has to keep the referrers tag.
        assert "oci-subject" not in {k.lower() for k in r.headers}
        return descriptor_for(manifest, digest_of(body), len(body))

    def update_referrers_index(self, subject: str, descriptor: dict[str, Any]) -> None:
        """The distribution spec's client steps when a registry did not process a subject:
        pull the index under the referrers tag (none yet: an empty one), add the new
        descriptor unless it is there, push it back."""
        url = f"http://{self.address}/v2/{self.repository}/manifests/{sig.referrers_tag(subject)}"
        r = httpx.get(url, headers={"Accept": OCI_INDEX})
        if r.status_code == 404:
            index: dict[str, Any] = {"schemaVersion": 2, "mediaType": OCI_INDEX,
                                     "manifests": []}
        else:
            r.raise_for_status()
            assert r.headers["content-type"] == OCI_INDEX, "not a referrers index"
            index = r.json()
        if all(m["digest"] != descriptor["digest"] for m in index["manifests"]):
            index["manifests"].append(descriptor)
            self.put_index(subject, index["manifests"])

    def put_index(self, subject: str, manifests: list[dict[str, Any]]) -> None:
        body = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX,
                           "manifests": manifests}).encode()
        httpx.put(f"http://{self.address}/v2/{self.repository}/manifests/"
                  f"{sig.referrers_tag(subject)}", content=body,
                  headers={"Content-Type": OCI_INDEX}).raise_for_status()

    def bundle(self, subject: dict[str, Any], predicate: str,
               keep_index: bool = True) -> dict[str, Any]:
        """What cosign 3 pushes for ``cosign sign`` (predicate: cosign's signing one) and
        ``cosign attest`` (any other): a sigstore bundle as a referrer."""
        alg, hexdigest = subject["digest"].split(":")
        statement = {"_type": "https://in-toto.io/Statement/v1",
                     "subject": [{"digest": {alg: hexdigest}}],
                     "predicateType": predicate, "predicate": {}}
        bundle = json.dumps({
            "mediaType": BUNDLE, "verificationMaterial": {"publicKey": {"hint": "test"}},
            "dsseEnvelope": {"payload": base64.b64encode(json.dumps(statement).encode()).decode(),
                             "payloadType": "application/vnd.in-toto+json",
                             "signatures": [{"sig": base64.b64encode(b"dummy").decode()}]},
        }).encode()
        manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": BUNDLE,
                    "config": self.blob(EMPTY, b"{}"), "layers": [self.blob(BUNDLE, bundle)],
                    "subject": subject, "annotations": bundle_annotations(predicate)}
        desc = self.manifest(manifest)
        if keep_index:
            self.update_referrers_index(subject["digest"], desc)
        return desc

    def simple(self, subject: dict[str, Any], artifact_type: str | None, layer_type: str,
               data: bytes, config_type: str = EMPTY) -> dict[str, Any]:
        """An artifact with one layer (an SBOM as `oras attach` pushes one, cosign's OCI
        1.1 signature with the type in its config)."""
        manifest: dict[str, Any] = {
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": self.blob(config_type, b"{}"), "layers": [self.blob(layer_type, data)],
            "subject": subject}
        if artifact_type:
            manifest["artifactType"] = artifact_type
        desc = self.manifest(manifest)
        self.update_referrers_index(subject["digest"], desc)
        return desc

    def notation(self, subject: dict[str, Any], tag: str) -> dict[str, Any]:
        """A notation signature through oras-py's own push (config of the signature type,
        a JWS envelope, the thumbprint annotation, the subject); push() needs a tag."""
        envelope, config = self.workdir / "signature.jws", self.workdir / "config.json"
        envelope.write_text('{"payload":"e30","protected":"e30","signature":"AA"}')
        config.write_text("{}")
        r = self.client.push(
            target=f"{self.address}/{self.repository}:{tag}",
            files=[f"{envelope}:application/jose+json"], disable_path_validation=True,
            manifest_config=f"{config}:{NOTATION}",
            manifest_annotations={"io.cncf.notary.x509chain.thumbprint#S256": '["00"]'},
            subject=oras.oci.Subject(**subject), quiet=True)
        assert r.status_code == 201, r.status_code
        got = httpx.get(f"http://{self.address}/v2/{self.repository}/manifests/{tag}",
                        headers={"Accept": OCI_MANIFEST})
        got.raise_for_status()
        desc = descriptor_for(got.json(), digest_of(got.content), len(got.content))
        assert desc["artifactType"] == NOTATION
        self.update_referrers_index(subject["digest"], desc)
        return desc

    def cosign_legacy(self, subject: dict[str, Any]) -> None:
        """``cosign sign`` before OCI 1.1: an image under ``sha256-<hex>.sig`` whose layer is
        the simple-signing payload, the signature in an annotation."""
        payload = json.dumps({"critical": {
            "identity": {"docker-reference": f"{self.address}/{self.repository}"},
            "image": {"docker-manifest-digest": subject["digest"]},
            "type": "cosign container image signature"}, "optional": None}).encode()
        layer = dict(self.blob(SIMPLE_SIGNING, payload),
                     annotations={"dev.cosignproject.cosign/signature": "MEUCIQDtest"})
        config = json.dumps({"architecture": "", "os": "", "config": {}, "rootfs": {
            "type": "layers", "diff_ids": [digest_of(payload)]}}).encode()
        self.manifest({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                       "config": self.blob("application/vnd.oci.image.config.v1+json", config),
                       "layers": [layer]}, tag=sig.cosign_tag(subject["digest"]))


# -- against the real registry --------------------------------------------------------------

# tag -> signed, for a registry without the referrers API.
TAG_SCHEMA_CASES = {
    "bundle": 1,          # cosign 3 signature and an attestation, tag schema kept
    "stale-index": 1,     # the same, in an index written by go-containerregistry < 0.22.1
    "cosign-oci11": 1,    # cosign 2's OCI 1.1 mode
    "notation": 1,        # notation
    "legacy": 1,          # cosign's sha256-<hex>.sig
    "sbom": 0,            # SPDX, CycloneDX and in-toto referrers only
    "attestation": 0,     # cosign 3 attestation bundles only
    "squatted": 0,        # the referrers tag names an image, not an index
    "dangling": 0,        # the index lists a manifest that is gone
    "unsigned": 0,
}
SIGNED_IN_TAG_SCHEMA = {"bundle", "stale-index", "cosign-oci11", "notation"}


@dataclass
class Published:
    repo: str  # host/name
    name: str
    digests: dict[str, str]  # tag -> digest
    opened: list[str]  # the stale index's referrers, as listed (attestation first)
    gone: str  # the dangling index's referrer, deleted


@pytest.fixture(scope="module")
def published(dockerd: Dockerd, registry: Registry,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[Published]:
    name = "hygiene/sigs"
    repo = f"{registry.address}/{name}"
    for tag in TAG_SCHEMA_CASES:
        push_version(dockerd, f"{repo}:{tag}", f"signatures {tag}")
    pub = Publisher(registry.address, name, tmp_path_factory.mktemp("oras"))
    subjects = {tag: pub.subject(tag) for tag in TAG_SCHEMA_CASES}

    pub.bundle(subjects["bundle"], SIGN)
    pub.bundle(subjects["bundle"], SLSA)
    # Stale: descriptors with the empty config's type and no annotations.
    stale = subjects["stale-index"]
    opened = [pub.bundle(stale, SLSA, keep_index=False),
              pub.bundle(stale, SIGN, keep_index=False)]
    pub.put_index(stale["digest"], [dict(d, artifactType=EMPTY, annotations={})
                                    for d in opened])
    pub.simple(subjects["cosign-oci11"], None, SIMPLE_SIGNING,
               b'{"critical":{"type":"cosign container image signature"}}',
               config_type=COSIGN_OCI11)
    pub.notation(subjects["notation"], "notation-signature")
    pub.cosign_legacy(subjects["legacy"])
    sbom = subjects["sbom"]
    pub.simple(sbom, "application/spdx+json", "application/spdx+json",
               b'{"spdxVersion":"SPDX-2.3"}')
    pub.simple(sbom, "application/vnd.cyclonedx+json", "application/vnd.cyclonedx+json",
               b'{"bomFormat":"CycloneDX"}')
    pub.simple(sbom, "application/vnd.in-toto+json", "application/vnd.dsse.envelope.v1+json",
               b'{"payloadType":"application/vnd.in-toto+json"}')
    pub.bundle(subjects["attestation"], SLSA)
    pub.bundle(subjects["attestation"], SPDX_PREDICATE)
    # Someone pushed an image under the referrers tag: that is no index, so no referrers.
    squatted = subjects["squatted"]["digest"]
    body = httpx.get(f"http://{registry.address}/v2/{name}/manifests/unsigned",
                     headers={"Accept": DOCKER_MANIFEST}).content
    httpx.put(f"http://{registry.address}/v2/{name}/manifests/{sig.referrers_tag(squatted)}",
              content=body, headers={"Content-Type": DOCKER_MANIFEST}).raise_for_status()
    # A signature deleted without its entry: listed (stale, so it has to be opened), gone.
    dangling = subjects["dangling"]
    gone = pub.bundle(dangling, SIGN, keep_index=False)
    pub.put_index(dangling["digest"], [dict(gone, artifactType=EMPTY, annotations={})])
    httpx.delete(f"http://{registry.address}/v2/{name}/manifests/{gone['digest']}"
                 ).raise_for_status()
    yield Published(repo, name, {t: s["digest"] for t, s in subjects.items()},
                    [d["digest"] for d in opened], gone["digest"])


def signature_requests(counts: Counter[tuple[str, str]], name: str,
                       digests: dict[str, str]) -> dict[str, Counter[str]]:
    """Per tag, the signature requests for its digest: 'referrers', 'tag' (the referrers
    tag), 'sig' (cosign's tag)."""
    out = {tag: Counter[str]() for tag in digests}
    for (method, path), n in counts.items():
        for tag, digest in digests.items():
            hexdigest = digest.split(":")[1]
            if path == f"/v2/{name}/referrers/{digest}" and method == "GET":
                out[tag]["referrers"] += n
            elif path == f"/v2/{name}/manifests/sha256-{hexdigest}" and method == "GET":
                out[tag]["tag"] += n
            elif path == f"/v2/{name}/manifests/sha256-{hexdigest}.sig" and method == "HEAD":
                out[tag]["sig"] += n
    return out


def signed_values(m: Metrics, repo: str) -> dict[str, float | None]:
    return {t: m.get("docker_image_upstream_signed", image=f"{repo}:{t}")
            for t in TAG_SCHEMA_CASES}


def test_signatures_in_the_referrers_tag_schema(published: Published, dockerd: Dockerd,
                                                registry: Registry, exporter_factory,
                                                tmp_path: Path) -> None:
    p = published
    args = ("--docker.host", dockerd.host, *FAST, "--state.path", str(tmp_path / "state.db"),
            "--upstream.include", f"^{re.escape(p.repo)}:")
    every = lambda m: None not in signed_values(m, p.repo).values()  # noqa: E731
    before = registry_requests(registry)
    exp = exporter_factory(*args)
    m = exp.wait_metrics(every, what="every tag's signature")
    assert signed_values(m, p.repo) == TAG_SCHEMA_CASES
    time.sleep(5)  # two more cycles: nothing is looked for again within versions.interval
    exp.stop()
    asked = registry_requests(registry) - before
    per_tag = signature_requests(asked, p.name, p.digests)
    # Distribution 2.8 answered the referrers API with 404 once; every digest then went to
    # the referrers tag and, at the same time, to cosign's tag (also when the referrers
    # named a signature: the price of asking both at once).
    assert sum(n for (method, path), n in asked.items() if "/referrers/" in path) == 1
    for tag, want in per_tag.items():
        assert want - Counter({"referrers": 1}) == Counter({"tag": 1, "sig": 1}), (tag, want)
    # The stale index's referrers were opened (the attestation listed first, then the
    # signature), once each; the dangling one was asked for; nothing else was fetched.
    fetched = Counter({path.rsplit("/", 1)[1]: n for (method, path), n in asked.items()
                       if method == "GET" and "/manifests/sha256:" in path})
    assert fetched == Counter({**dict.fromkeys(p.opened, 1), p.gone: 1})
    assert not [k for k in asked if "/blobs/" in k[1]]

    # Restarted with the same state: looked for once more, as at every start-up; the
    # referrer manifests opened before are not fetched again (kept by digest).
    before = registry_requests(registry)
    exp = exporter_factory(*args)
    m = exp.wait_metrics(every, what="signatures after a restart")
    assert signed_values(m, p.repo) == TAG_SCHEMA_CASES
    exp.stop()
    asked = registry_requests(registry) - before
    assert sum(n for (method, path), n in asked.items() if "/referrers/" in path) == 1
    assert {t: c["tag"] for t, c in signature_requests(asked, p.name, p.digests).items()} == \
        dict.fromkeys(TAG_SCHEMA_CASES, 1)
    assert not [k for k in asked if k[0] == "GET" and "/manifests/sha256:" in k[1]
                and not k[1].endswith(p.gone)], asked


def test_unsigned_digests_are_looked_for_again(published: Published, dockerd: Dockerd,
                                               registry: Registry, exporter_factory) -> None:
    """After versions.interval an unsigned digest is looked for again (the referrers tag and
    cosign's tag), the referrers API asked once per interval for the registry, not once per
    digest; a signature found is never looked for again."""
    p = published
    before = registry_requests(registry)
    exp = exporter_factory("--docker.host", dockerd.host, *FAST, "--versions.interval", "3s",
                           "--upstream.include", f"^{re.escape(p.repo)}:")
    m = exp.wait_metrics(lambda m: None not in signed_values(m, p.repo).values(),
                         what="every tag's signature")
    assert signed_values(m, p.repo) == TAG_SCHEMA_CASES
    time.sleep(10)
    exp.stop()
    asked = registry_requests(registry) - before
    per_tag = signature_requests(asked, p.name, p.digests)
    for tag in SIGNED_IN_TAG_SCHEMA:  # found once, never looked for again
        assert per_tag[tag]["tag"] == 1 and per_tag[tag]["sig"] == 1, (tag, per_tag[tag])
    assert (per_tag["legacy"]["tag"], per_tag["legacy"]["sig"]) == (1, 1)
    looks = {t: c["tag"] for t, c in per_tag.items() if not TAG_SCHEMA_CASES[t]}
    assert min(looks.values()) >= 2, per_tag
    for tag in looks:
        assert per_tag[tag]["sig"] == per_tag[tag]["tag"], (tag, per_tag[tag])
    probes = sum(n for (method, path), n in asked.items() if "/referrers/" in path)
    assert 1 <= probes <= max(looks.values()) + 1, (probes, looks)


# -- through the referrers API (a stand-in in front of the real registry) -------------------

API_CASES = {"bundle": 1, "notation": 1, "sbom": 0, "attestation": 0}


def test_signatures_through_the_referrers_api(dockerd: Dockerd, registry: Registry,
                                              exporter_factory, tmp_path: Path) -> None:
    """A registry with the referrers API lists what has the digest as subject. The stand-in
    lists the descriptors of referrers oras-py pushed to the real registry (without a
    referrers tag: such a registry needs none), with the fields the spec says it must."""
    proxy = FaultProxy(registry.port).start()
    proxy.referrers = {}
    try:
        name = "hygiene/sigs-api"
        refs = {t: f"{proxy.address}/{name}:{t}" for t in API_CASES}
        for tag, ref in refs.items():
            push_version(dockerd, ref, f"signatures through the API {tag}")
        pub = Publisher(registry.address, name, tmp_path / "oras")
        subjects = {t: pub.subject(t) for t in API_CASES}
        listed = {t: [] for t in API_CASES}
        listed["bundle"] = [pub.bundle(subjects["bundle"], SLSA, keep_index=False),
                            pub.bundle(subjects["bundle"], SIGN, keep_index=False)]
        listed["sbom"] = [pub.manifest({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": "application/spdx+json",
            "config": pub.blob(EMPTY, b"{}"),
            "layers": [pub.blob("application/spdx+json", b'{"spdxVersion":"SPDX-2.3"}')],
            "subject": subjects["sbom"]})]
        listed["attestation"] = [pub.bundle(subjects["attestation"], SLSA, keep_index=False)]
        listed["notation"] = [pub.manifest({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": NOTATION,
            "config": pub.blob(EMPTY, b"{}"),
            "layers": [pub.blob("application/jose+json", b'{"payload":"e30"}')],
            "subject": subjects["notation"],
            "annotations": {"io.cncf.notary.x509chain.thumbprint#S256": '["00"]'}})]
        proxy.referrers = {subjects[t]["digest"]: listed[t] for t in API_CASES}
        exp = exporter_factory("--docker.host", dockerd.host, *FAST, "--upstream.include",
                               f"^{re.escape(proxy.address)}/{name}:")
        m = exp.wait_metrics(lambda m: all(
            m.get("docker_image_upstream_signed", image=r) is not None for r in refs.values()),
            what="signatures through the referrers API")
        assert {t: m.get("docker_image_upstream_signed", image=r) for t, r in refs.items()} == \
            API_CASES
        exp.stop()
        # Per digest one referrers GET and, at the same time, cosign's tag; the referrers
        # tag is never asked where the API is served, nor manifests opened.
        per_tag = signature_requests(proxy.counts, name,
                                     {t: s["digest"] for t, s in subjects.items()})
        assert per_tag == {t: Counter({"referrers": 1, "sig": 1}) for t in API_CASES}
        assert not [k for k in proxy.counts if k[0] == "GET" and "/manifests/" in k[1]]
    finally:
        proxy.stop()
