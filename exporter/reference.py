"""Image references, normalised the way the Docker Engine does it.

``busybox``, ``library/busybox:latest``, ``docker.io/library/busybox`` and
``index.docker.io/library/busybox:latest`` all name one tag. The engine stores the short
("familiar") form in RepoTags, so that is the form used in metric labels.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DOCKER_HUB = "docker.io"
_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_DOMAIN = re.compile(
    r"(?:localhost|[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*"
    r"[a-zA-Z0-9])?)*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?"
)
_TAG = re.compile(r"[\w][\w.-]{0,127}")
_DIGEST = re.compile(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}")
_IMAGE_ID = re.compile(r"(?:sha256:)?[a-f0-9]{64}")
MAX_LENGTH = 4096


class ReferenceError(ValueError):
    """Not a valid image reference."""


@dataclass(frozen=True)
class Reference:
    """A normalised reference: registry domain, repository path, and tag and/or digest."""

    domain: str
    path: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """Fully qualified repository name, e.g. ``docker.io/library/busybox``."""
        return f"{self.domain}/{self.path}"

    @property
    def familiar_name(self) -> str:
        """Repository as the engine shows it in RepoTags, e.g. ``busybox``."""
        if self.domain != DOCKER_HUB:
            return self.name
        return self.path.removeprefix("library/")

    def familiar(self) -> str:
        """Short form with tag and/or digest, e.g. ``busybox:latest``."""
        out = self.familiar_name
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out

    def __str__(self) -> str:
        out = self.name
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out


def is_image_id(text: str) -> bool:
    return _IMAGE_ID.fullmatch(text) is not None


def parse(text: str, default_tag: str | None = "latest") -> Reference:
    """Parse and normalise a reference; add ``default_tag`` when it has neither tag nor digest."""
    if not isinstance(text, str) or not text or len(text) > MAX_LENGTH:
        raise ReferenceError("empty or overlong reference")
    if is_image_id(text):
        raise ReferenceError(f"{text!r} is an image ID, not a reference")
    rest, _, digest = text.partition("@")
    if digest and not _DIGEST.fullmatch(digest):
        raise ReferenceError(f"invalid digest in {text!r}")
    tag = None
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > slash:
        rest, tag = rest[:colon], rest[colon + 1 :]
        if not _TAG.fullmatch(tag):
            raise ReferenceError(f"invalid tag in {text!r}")
    first, sep, remainder = rest.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        if not _DOMAIN.fullmatch(first):
            raise ReferenceError(f"invalid registry host in {text!r}")
        domain, path = first, remainder
    else:
        domain, path = DOCKER_HUB, rest
    if domain in _HUB_ALIASES:
        domain = DOCKER_HUB
        if "/" not in path:
            path = f"library/{path}"
    if not path or not all(_COMPONENT.fullmatch(c) for c in path.split("/")):
        raise ReferenceError(f"invalid repository name in {text!r}")
    if len(domain) + 1 + len(path) > 255:
        raise ReferenceError("repository name longer than 255 characters")
    if tag is None and not digest:
        tag = default_tag
    return Reference(domain, path, tag, digest or None)


def familiar(text: str) -> str:
    """The engine's short form of a reference, or the text unchanged when it is not one."""
    try:
        return parse(text).familiar()
    except ReferenceError:
        return text
