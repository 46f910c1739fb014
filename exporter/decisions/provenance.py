"""Which of an image's RepoDigests say it came from a registry.

The exporter asks a registry about a tag only when the image came from one: on Docker's
classic image store only a pull (or a push) records a RepoDigest, so a RepoDigest was proof
enough. Other stores record them for images that never left the host:

- Podman names what it builds, imports or commits ``localhost/...`` and gives it a
  RepoDigest all the same;
- Docker's containerd image store (the default from Docker 29) gives every tagged image a
  RepoDigest, local builds included: the digest of the manifest it made itself.

Taken at its word, such a RepoDigest would make the exporter tell a registry the name of a
private build; for a name without a registry (``mycorp/secret-app``) that registry is Docker
Hub. So on the containerd store a Docker Hub RepoDigest counts only when the engine says the
image was pulled from that repository (``Identity.Pull``, API 1.53 and newer) or, where the
engine does not say, when this exporter saw the host pull it (the event stream, remembered
in the state store). A name that names its registry (``ghcr.io/org/app``) is kept: asking
that registry is what the name means.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

from exporter import reference

CLASSIC, CONTAINERD, PODMAN = "classic", "containerd", "podman"


def repository(name: str) -> str:
    """The fully qualified repository of a reference or a repository name ("" if neither):
    ``busybox@sha256:...`` and ``docker.io/library/busybox`` both give
    ``docker.io/library/busybox``."""
    try:
        return reference.parse(name.partition("@")[0], default_tag=None).name
    except reference.ReferenceError:
        return ""


def registry_digests(digests: Iterable[str], store: str, pulled_from: Collection[str] | None,
                     seen_pulled: Collection[str]) -> tuple[str, ...]:
    """The RepoDigests (``repository@digest``) that show the image came from a registry.

    ``pulled_from`` is the engine's own list of repositories the image was pulled from (None
    when the engine does not say); ``seen_pulled`` the repositories this exporter saw the
    host pull. Both hold fully qualified names.
    """
    out = []
    for entry in digests:
        repo = repository(entry)
        if not repo:
            continue
        if store == PODMAN and repo.startswith("localhost/"):
            continue
        if store == CONTAINERD and repo.startswith(reference.DOCKER_HUB + "/"):
            evidence = seen_pulled if pulled_from is None else pulled_from
            if repo not in evidence:
                continue
        out.append(entry)
    return tuple(out)
