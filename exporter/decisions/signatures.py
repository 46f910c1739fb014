"""Signatures: which of what a registry lists for a digest is a signature.

Pure functions of referrer descriptors (from the OCI referrers API or the referrers tag
schema) and of referrer manifests; presence only, nothing is verified. An allow-list: what
is not a known signature spelling (SBOMs, attestations, anything new) is not a signature.

Signatures, by who writes them:
- Notation (Notary Project): artifactType ``application/vnd.cncf.notary.signature``
  (``...notary.v2.signature`` from its pre-1.0 prototypes too).
- cosign's OCI 1.1 mode: ``application/vnd.dev.cosign.artifact.sig.v1+json``; a manifest
  with a simple-signing layer.
- cosign 3 and other sigstore clients: a sigstore bundle (``application/vnd.dev.sigstore.
  bundle.v0.3+json``, ``...bundle+json;version=0.1|0.2|0.3``) whose annotation
  ``dev.sigstore.bundle.predicateType`` is cosign's signing predicate. Attestations are
  bundles of the same type with another predicate (SLSA, SPDX, CycloneDX, ...).

A descriptor whose artifactType says nothing (empty, the empty config, the image config:
indexes written by cosign 3 through go-containerregistry < 0.22.1, or rewritten by skopeo)
or a bundle without the annotation is decided by its manifest, opened at most
``MAX_OPENED`` times per digest.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from enum import Enum
from typing import Any

from exporter.registry.manifest import DIGEST, OCI_INDEX

NOTATION = frozenset({"application/vnd.cncf.notary.signature",
                      "application/vnd.cncf.notary.v2.signature"})
COSIGN_OCI11 = "application/vnd.dev.cosign.artifact.sig.v1+json"
SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_TYPES = NOTATION | {COSIGN_OCI11}
# application/vnd.dev.sigstore.bundle.v0.3+json, application/vnd.dev.sigstore.bundle+json;
# version=0.3 (sigstore-go reads both spellings, and 0.1 and 0.2 in the second).
_BUNDLE = re.compile(r"application/vnd\.dev\.sigstore\.bundle"
                     r"(?:\.v\d+(?:\.\d+)*\+json|\+json(?:\s*;\s*version=[\w.]+)?)")
PREDICATE = "dev.sigstore.bundle.predicateType"
CONTENT = "dev.sigstore.bundle.content"
COSIGN_SIGN = "https://sigstore.dev/cosign/sign/v1"
# artifactTypes that name no kind of artifact: the manifest has to be opened.
GENERIC_TYPES = frozenset({"", "application/vnd.oci.empty.v1+json",
                           "application/vnd.oci.image.config.v1+json",
                           "application/vnd.unknown.config.v1+json"})
# Referrer manifests opened per digest at most; one GET each the first time (documents
# are content-addressed and kept), nothing afterwards.
MAX_OPENED = 8


class Verdict(Enum):
    SIGNED = "signed"
    NOT = "not"
    LOOK = "look"  # open the referrer manifest to know


def referrers_tag(digest: str) -> str:
    """The referrers tag schema's tag for ``digest`` (OCI distribution-spec 1.1):
    ``sha256:<hex>`` -> ``sha256-<hex>``; algorithm cut at 32 characters, encoded part at 64,
    anything a tag may not hold replaced with ``-``."""
    algorithm, _, encoded = digest.partition(":")
    tag = f"{algorithm[:32]}-{encoded[:64]}"
    return "".join(c if (c.isascii() and c.isalnum()) or c in "_.-" else "-" for c in tag)


def cosign_tag(digest: str) -> str:
    """cosign's legacy signature tag for ``digest``: ``sha256-<hex>.sig``, never cut."""
    return digest.replace(":", "-") + ".sig"


def _media_type(value: Any) -> str:
    return value.strip().lower() if isinstance(value, str) else ""


def is_bundle(media_type: str) -> bool:
    return _BUNDLE.fullmatch(_media_type(media_type)) is not None


def _annotations(doc: Mapping[str, Any]) -> Mapping[str, Any]:
    value = doc.get("annotations")
    return value if isinstance(value, Mapping) else {}


def _bundle(annotations: Mapping[str, Any]) -> Verdict:
    """A sigstore bundle is a signature only with cosign's signing predicate."""
    predicate = annotations.get(PREDICATE)
    if isinstance(predicate, str):
        return Verdict.SIGNED if predicate.strip() == COSIGN_SIGN else Verdict.NOT
    if annotations.get(CONTENT) == "message-signature":
        return Verdict.SIGNED
    return Verdict.LOOK


def descriptor(entry: Mapping[str, Any]) -> Verdict:
    """What a referrer descriptor says by itself."""
    artifact = _media_type(entry.get("artifactType"))
    if artifact in SIGNATURE_TYPES:
        return Verdict.SIGNED
    if is_bundle(artifact):
        return _bundle(_annotations(entry))
    if artifact in GENERIC_TYPES:
        return Verdict.LOOK
    return Verdict.NOT


def manifest(doc: Mapping[str, Any], subject: str) -> bool:
    """Whether a referrer manifest is a signature of ``subject``. One that names another
    subject is not (the tag schema's index is written by clients, not the registry)."""
    named = doc.get("subject")
    if isinstance(named, Mapping) and named.get("digest") not in (None, subject):
        return False
    config = doc.get("config")
    config_type = config.get("mediaType") if isinstance(config, Mapping) else None
    artifact = _media_type(doc.get("artifactType")) or _media_type(config_type)
    layers = [layer for layer in doc.get("layers") or [] if isinstance(layer, Mapping)]
    layer_types = {_media_type(layer.get("mediaType")) for layer in layers}
    if artifact in SIGNATURE_TYPES or SIMPLE_SIGNING in layer_types:
        return True
    if is_bundle(artifact) or any(is_bundle(t) for t in layer_types):
        # Without the annotation a bundle is as likely an attestation: not counted.
        return _bundle(_annotations(doc)) is Verdict.SIGNED
    return False


def referrers_index(media_type: str, doc: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The descriptors of what the referrers tag holds; none unless it is an OCI index (the
    spec: a tag that holds anything else means no referrers)."""
    declared = doc.get("mediaType")
    entries = doc.get("manifests")
    if _media_type(media_type) != OCI_INDEX or declared not in (None, OCI_INDEX) \
            or not isinstance(entries, list):
        return []
    return [e for e in entries if isinstance(e, Mapping)]


def decide(entries: Iterable[Mapping[str, Any]], subject: str,
           open_manifest: Callable[[str], Mapping[str, Any] | None],
           limit: int = MAX_OPENED) -> bool:
    """Whether the referrers of ``subject`` hold a signature. Descriptors decide first; then
    up to ``limit`` manifests whose descriptor cannot tell are opened (``open_manifest``
    returns None for one that is gone). Past the limit, what is left counts as unsigned."""
    entries = list(entries)
    verdicts = [descriptor(e) for e in entries]
    if Verdict.SIGNED in verdicts:
        return True
    to_open: list[str] = []
    for entry, verdict in zip(entries, verdicts, strict=True):
        digest = entry.get("digest")
        if verdict is Verdict.LOOK and isinstance(digest, str) and DIGEST.fullmatch(digest) \
                and digest not in to_open:
            to_open.append(digest)
    for digest in to_open[:limit]:
        doc = open_manifest(digest)
        if doc is not None and manifest(doc, subject):
            return True
    return False
