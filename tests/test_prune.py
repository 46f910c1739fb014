"""docker_images_dangling_bytes is what ``image prune`` (dangling only) then frees, on a real
dockerd and a real Podman service."""

from __future__ import annotations

import os
import re
from pathlib import Path

from tests.services import Dockerd, Podman

FAST = ("--collector.engine.interval", "1s", "--collector.disk.interval", "1s",
        "--upstream.mode", "off")
UNITS = {"B": 1, "kB": 1000, "MB": 1000**2, "GB": 1000**3, "TB": 1000**4}  # docker CLI's
UNIQUE = 20_000_000  # the dangling image's own layer


def _random_layer(size: int, name: str = "data") -> str:
    """A layer of ``size`` random bytes (``name`` makes a rebuild miss the build cache)."""
    return ('RUN ["/bin/busybox", "sh", "-c", '
            f'"/bin/busybox head -c {size} /dev/urandom > /{name}"]\n')


def _reclaimed(prune_output: str) -> int:
    """Docker CLI's "Total reclaimed space: 20.01MB", in bytes (its units are decimal)."""
    found = re.search(r"Total reclaimed space: ([\d.]+)\s*([kMGT]?B)", prune_output)
    assert found, prune_output
    return round(float(found[1]) * UNITS[found[2]])


def _stored_bytes(root: Path) -> int:
    """The bytes of every file in Podman's storage, as a measure of what a prune freed."""
    total = 0
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            if not os.path.islink(path):
                total += os.lstat(path).st_size
    return total


def test_dangling_bytes_equal_what_image_prune_frees(engine: Dockerd | Podman,
                                                     exporter_factory) -> None:
    """A tag rebuilt leaves its first build dangling: it shares the base image's layers and
    has a unique ~20 MB one, which a prune frees. Another dangling image is a stopped
    container's: a prune keeps it, so it counts for nothing.

    dockerd: BuildKit's cache holds the layers of what it built (measured: ``image prune``
    then frees 0 B), so the cache is pruned first, as images pulled or loaded have none.
    Podman: ``podman image prune`` prints the IDs it removed, not a total, so what it frees
    is measured as the files its storage holds before and after.
    """
    d = engine
    d.cli("image", "prune", "-f")  # what earlier tests left dangling: only this test's counts
    d.build("prune-base:1", f"FROM hygiene-base:1\n{_random_layer(3_000_000)}")
    for build in ("first", "second"):
        d.build("prune-app:1", f"FROM {d.local('prune-base:1')}\n{_random_layer(UNIQUE, build)}")
    for size in (5_000_000, 6_000_000):
        d.build("prune-used:1", f"FROM hygiene-base:1\n{_random_layer(size)}")
        if size == 5_000_000:
            d.cli("create", "--name", "prune-user", *d.RUN, d.local("prune-used:1"),
                  "/bin/busybox", "true")
    if isinstance(d, Dockerd):
        d.cli("builder", "prune", "-af")

    exp = exporter_factory("--docker.host", d.host, *FAST)
    metrics = exp.wait_metrics(lambda m: m.get("docker_images_dangling") == 2
                               and m.get("docker_images_dangling_bytes") is not None,
                               what="two dangling images and their bytes")
    exported = metrics.get("docker_images_dangling_bytes")
    assert UNIQUE <= exported < UNIQUE + 1_000_000, exported

    if isinstance(d, Podman):
        before = _stored_bytes(d.root / "storage")
        assert len(d.cli("image", "prune", "-f").split()) == 1  # the image IDs it removed
        freed = before - _stored_bytes(d.root / "storage")
    else:
        freed = _reclaimed(d.cli("image", "prune", "-f"))
    assert abs(exported - freed) <= 0.01 * freed, (exported, freed)
    # What the prune left: the stopped container's image, which frees nothing.
    exp.wait_metrics(lambda m: m.get("docker_images_dangling") == 1
                     and m.get("docker_images_dangling_bytes") == 0, what="nothing to free")
    d.cli("rm", "prune-user")
