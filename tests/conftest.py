"""Session fixtures: one private dockerd and one Podman service (each with a base image), and
one registry for the suite. ``engine`` runs a test once per engine."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.services import Dockerd, ExporterProcess, Podman, Registry, RootlessPodman


@pytest.fixture(scope="session")
def dockerd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dockerd]:
    daemon = Dockerd(Path(tmp_path_factory.mktemp("dockerd", numbered=True)))
    daemon.start()
    try:
        daemon.make_base_image("hygiene-base:1")
        yield daemon
    finally:
        daemon.stop()


@pytest.fixture(scope="session")
def podman(tmp_path_factory: pytest.TempPathFactory, registry: Registry) -> Iterator[Podman]:
    """Podman as an administrator sets it up: the suite's registry is in registries.conf."""
    service = Podman(Path(tmp_path_factory.mktemp("podman", numbered=True)),
                     insecure_registries=(registry.address,))
    service.start()
    try:
        service.make_base_image("hygiene-base:1")
        yield service
    finally:
        service.close()


@pytest.fixture(scope="session")
def podman_rootless(registry: Registry) -> Iterator[RootlessPodman]:
    """Podman as an unprivileged user runs it, its socket under $XDG_RUNTIME_DIR."""
    service = RootlessPodman.create(insecure_registries=(registry.address,))
    try:
        service.start()
        service.make_base_image("hygiene-base:1")
        yield service
    finally:
        service.close()


@pytest.fixture(scope="module", params=["dockerd", "podman"])
def engine(request: pytest.FixtureRequest) -> Dockerd | Podman:
    """The suite's dockerd, then its Podman service: tests that hold for both engines.
    Both have the interface of tests.services.Dockerd's engine section. Tests marked
    ``EVERY_ENGINE`` also run on rootless Podman."""
    return request.getfixturevalue(request.param)


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    reg = Registry(Path(tmp_path_factory.mktemp("registry", numbered=True)))
    reg.start()
    try:
        yield reg
    finally:
        reg.stop()


@pytest.fixture
def exporter_factory(tmp_path: Path) -> Iterator:
    started: list[ExporterProcess] = []

    def make(*args: str, wait_ready: bool = True,
             env: dict[str, str] | None = None) -> ExporterProcess:
        proc = ExporterProcess(list(args), tmp_path / f"exporter-{len(started)}.log",
                               env=env or {})
        started.append(proc)
        return proc.start(wait_ready=wait_ready)

    yield make
    for proc in started:
        proc.stop()
