"""What counts as a newer version of a tag: pure functions of tag names and a rule.

A tag is a version when it is numbers with dots, optionally after a ``v`` and before
``-suffixes`` that start with a letter: ``1.25``, ``1.25.3``, ``v1.2.3``, ``1.25.3-alpine``,
``3.18.4-bookworm``, ``2.0.0-rc.1``. Its shape is the ``v``, the number of components and the
suffix (the variant); a newer version has the same shape and greater numbers. A first suffix
like ``rc1``, ``beta.2`` or ``alpha`` makes a pre-release, which counts only when the rule
asks for them (or the local tag is one). Anything else (``latest``, ``sha256-<hex>.sig``,
``.att``, ``.sbom``, ``1.2.3rc1``, ``2024-01-15``) is never a candidate.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, replace

from exporter.config import VersionRule

_NUMBERS = re.compile(
    r"(?P<v>[vV]?)(?P<numbers>\d{1,9}(?:\.\d{1,9}){0,3})(?P<rest>(?:-[A-Za-z][A-Za-z0-9._]*)*)")
_PRE = re.compile(r"(?i)(dev|snapshot|nightly|canary|alpha|beta|pre|preview|rc)[.]?(\d{0,9})")
_PRE_RANK = {"dev": 0, "snapshot": 0, "nightly": 0, "canary": 0, "alpha": 1, "beta": 2,
             "pre": 3, "preview": 3, "rc": 4}
_NOT_VERSIONS = (".sig", ".att", ".sbom")
_PINNED = {"none": 0, "major": 1, "minor": 2}  # leading numbers a newer version keeps


@dataclass(frozen=True)
class Version:
    tag: str
    prefix: str  # "v" or ""
    numbers: tuple[int, ...]
    pre: tuple[int, int] | None  # (rank, number) of a pre-release, None for a release
    suffix: str  # the variant, e.g. "alpine" or "bookworm"

    @property
    def shape(self) -> tuple[str, int, str]:
        return self.prefix, len(self.numbers), self.suffix

    @property
    def order(self) -> tuple[tuple[int, ...], int, tuple[int, int]]:
        return self.numbers, 1 if self.pre is None else 0, self.pre or (0, 0)


def parse(tag: str) -> Version | None:
    """The version a tag names, or None when it is not one."""
    if len(tag) > 128 or tag.startswith("sha256-") or tag.endswith(_NOT_VERSIONS):
        return None  # 128: the longest tag the distribution spec allows
    m = _NUMBERS.fullmatch(tag)
    if not m:
        return None
    segments = [s for s in m.group("rest").split("-") if s]
    pre = None
    if segments:
        p = _PRE.fullmatch(segments[0])
        if p:
            pre = (_PRE_RANK[p.group(1).lower()], int(p.group(2) or 0))
            segments = segments[1:]
    return Version(tag, m.group("v").lower(), tuple(int(n) for n in
                                                     m.group("numbers").split(".")),
                   pre, "-".join(segments))


def newer(current: Version, tags: Iterable[str], rule: VersionRule) -> list[Version]:
    """The tags that are newer versions of ``current`` under ``rule``, newest first. The
    rule's pin must be set (``rule_for`` sets it): an unset pin is a bug, not "none"."""
    include = re.compile(rule.include) if rule.include else None
    exclude = re.compile(rule.exclude) if rule.exclude else None
    pinned = _PINNED[rule.pin]
    out = []
    for tag in tags:
        v = parse(tag)
        if v is None or v.shape != current.shape or v.order <= current.order:
            continue
        if v.pre is not None and not (rule.prereleases or current.pre is not None):
            continue
        if v.numbers[:pinned] != current.numbers[:pinned]:
            continue
        if (include and not include.search(tag)) or (exclude and exclude.search(tag)):
            continue
        out.append(v)
    return sorted(out, key=lambda v: v.order, reverse=True)


def rule_for(image: str, rules: Iterable[VersionRule], pin: str) -> VersionRule:
    """The first configured rule whose pattern matches the reference, else the default rule;
    ``pin`` (the versions.pin setting) where the rule sets none. A container's labels are
    applied after, so a label ``pin: none`` still allows major updates."""
    for rule in rules:
        if re.search(rule.image, image):
            return rule if rule.pin else replace(rule, pin=pin)
    return VersionRule(pin=pin)
