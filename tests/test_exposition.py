"""Rendering off the scrape path: unchanged reads re-render nothing, a scrape never waits for
the renderer, the cached gzip is the plain body, and the renderer outlives its failures."""

from __future__ import annotations

import dataclasses
import gzip
import logging
import threading
import time
import zlib
from collections.abc import Iterator

import pytest
from prometheus_client import generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics

from exporter.app import build_collectors
from exporter.exposition import KEEP, Exposition
from exporter.snapshots import EngineSnapshot
from exporter.sources.loop import Source
from tests.services import wait_for
from tests.test_golden import parts_for_golden


def test_gzip_body_is_the_plain_body_in_one_member() -> None:
    parts = parts_for_golden()
    exposition = Exposition(build_collectors(parts))
    for encoder, om in ((generate_latest, False), (openmetrics, True)):
        plain = exposition.render(encoder, om)
        body = exposition.render(encoder, om, gzip=True)
        assert gzip.decompress(body) == plain
        one = zlib.decompressobj(16 + zlib.MAX_WBITS)
        assert one.decompress(body) == plain and one.eof and one.unused_data == b""
        assert plain.endswith(b"# EOF\n") == om and plain.count(b"# EOF") == int(om)


def test_an_unchanged_read_keeps_the_snapshot_and_renders_nothing() -> None:
    """The engine read twice with equal answers: same object, no wake-up, no formatting."""
    parts = parts_for_golden()
    first = parts.engine.snapshot
    assert first is not None
    answers = [first, dataclasses.replace(first)]  # equal, not the same object
    engine: Source[EngineSnapshot] = Source("engine", lambda: answers.pop(0), 15.0)
    parts.engine = engine
    exposition = Exposition(build_collectors(parts))
    published: list[object] = []
    engine.on_publish(lambda: published.append(engine.snapshot))

    assert engine.refresh()
    body = exposition.render(generate_latest, False)
    rendered = exposition.rendered
    assert rendered > 0
    assert engine.refresh()
    assert engine.snapshot is first and published == [first]
    assert body.startswith(exposition.update(generate_latest, False).text)
    assert exposition.rendered == rendered, "an unchanged read re-rendered a family"


def test_a_changed_snapshot_re_renders_only_its_collectors() -> None:
    parts = parts_for_golden()
    exposition = Exposition(build_collectors(parts))
    exposition.render(generate_latest, False)
    before = exposition.rendered
    assert parts.disk.snapshot is not None
    parts.disk.snapshot = dataclasses.replace(parts.disk.snapshot, dangling_unused=12345)
    body = exposition.render(generate_latest, False, fresh=True)
    # The disk collector and the images collector (it reads disk too); nothing else.
    assert exposition.rendered - before == 2
    assert b"12345" in body


def test_the_renderer_updates_on_publish_and_a_scrape_never_waits_for_it() -> None:
    parts = parts_for_golden()
    exposition = Exposition(build_collectors(parts))
    stop = threading.Event()
    thread = exposition.start(stop)
    try:
        old = exposition.render(generate_latest, False)
        assert parts.disk.snapshot is not None
        parts.disk.snapshot = dataclasses.replace(parts.disk.snapshot, dangling_unused=777)
        # While the renderer is busy (here: held), scrapes answer at once with the old text.
        with exposition._rendering:
            exposition.changed()
            answered: list[bytes] = []
            scraper = threading.Thread(
                target=lambda: answered.append(exposition.render(generate_latest, False)))
            scraper.start()
            scraper.join(5)
            assert answered and b"777" not in answered[0]
            assert answered[0].split(b"# HELP docker_exporter_")[0] == \
                old.split(b"# HELP docker_exporter_")[0]
        wait_for(lambda: b"777" in exposition.render(generate_latest, False), 10,
                 "the renderer to render the published snapshot")
    finally:
        stop.set()
        thread.join(5)
    assert not thread.is_alive()


class Flaky:
    """A snapshot collector whose formatting fails while ``failing`` is set."""

    def __init__(self) -> None:
        self.failing = threading.Event()
        self.calls = 0
        self.key: tuple[object, ...] = (object(),)

    def cache_key(self) -> tuple[object, ...]:
        return self.key

    def collect(self) -> Iterator[Metric]:
        self.calls += 1
        if self.failing.is_set():
            raise RuntimeError("a bug in a collector")
        yield GaugeMetricFamily("docker_test_value", "A test.", value=self.calls)


def test_the_renderer_lives_through_thousands_of_failures(
        caplog: pytest.LogCaptureFixture) -> None:
    flaky = Flaky()
    exposition = Exposition([flaky])
    exposition.render(generate_latest, False)
    stop = threading.Event()
    thread = exposition.start(stop)
    flaky.failing.set()
    try:
        with caplog.at_level(logging.ERROR, logger="exporter.exposition"):
            for round_ in range(2000):
                flaky.key = (object(),)
                calls = flaky.calls
                exposition.changed()
                wait_for(lambda calls=calls: flaky.calls > calls, 10,
                         f"render attempt {round_}", interval=0.0005)
        assert thread.is_alive()
        # The failed format was dropped: a scrape renders it itself and fails loudly.
        wait_for(lambda: False not in exposition._ready, 10, "the failed format to be dropped")
        with pytest.raises(RuntimeError):
            exposition.render(generate_latest, False)
        assert any("rendering the metrics failed" in r.message for r in caplog.records)
        flaky.failing.clear()
        flaky.key = (object(),)
        assert b"docker_test_value" in exposition.render(generate_latest, False)
        exposition.changed()
        calls = flaky.calls
        flaky.key = (object(),)
        exposition.changed()
        wait_for(lambda: flaky.calls > calls, 10, "the renderer to render again")
        assert thread.is_alive()
    finally:
        stop.set()
        thread.join(5)


def test_the_first_scrape_of_either_format_finds_its_text_ready() -> None:
    parts = parts_for_golden()
    now = [0.0]
    exposition = Exposition(build_collectors(parts), clock=lambda: now[0])
    stop = threading.Event()
    thread = exposition.start(stop)
    try:
        exposition.changed()  # as the engine's first read does
        wait_for(lambda: len(exposition._ready) == 2, 10, "both formats to be rendered")
        rendered = exposition.rendered
        for encoder, om in ((openmetrics, True), (generate_latest, False)):
            assert exposition.render(encoder, om).startswith(exposition._ready[om].text)
        assert exposition.rendered == rendered
        # A format nobody asked for in KEEP seconds is let go, and no longer rendered.
        now[0] = KEEP + 1
        exposition.render(generate_latest, False)
        assert parts.disk.snapshot is not None
        parts.disk.snapshot = dataclasses.replace(parts.disk.snapshot, dangling_unused=9)
        exposition.changed()
        wait_for(lambda: exposition.rendered == rendered + 2, 10, "the text format's render")
        time.sleep(0.2)
        assert exposition.rendered == rendered + 2, "the format nobody asked for was rendered"
        assert list(exposition._ready) == [False]
        # Asked for again, it is rendered once, with what the snapshots say now.
        assert b"\ndocker_images_dangling_bytes 9.0\n" in exposition.render(openmetrics, True)
    finally:
        stop.set()
        thread.join(5)


def test_a_format_first_asked_for_late_is_not_served_stale() -> None:
    """Both formats rendered before the engine's first read; a scraper asks for one; the
    engine publishes; the other format, asked for later, must show the engine's series."""
    parts = parts_for_golden()
    snapshot, parts.engine.snapshot = parts.engine.snapshot, None
    exposition = Exposition(build_collectors(parts))
    stop = threading.Event()
    thread = exposition.start(stop)
    try:
        exposition.changed()
        wait_for(lambda: len(exposition._ready) == 2, 10, "both formats to be rendered")
        assert b"docker_image_info" not in exposition.render(generate_latest, False)
        parts.engine.snapshot = snapshot
        exposition.changed()
        wait_for(lambda: b"docker_image_info" in exposition.render(generate_latest, False),
                 10, "the text format to be rendered again")
        assert b"docker_image_info" in exposition.render(openmetrics, True)
    finally:
        stop.set()
        thread.join(5)
