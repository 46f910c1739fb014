"""Session fixtures: one private dockerd (with a base image) and one registry for the suite."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.services import Dockerd, ExporterProcess, Registry


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
