"""``docker-hygiene-exporter report``: the status page's facts as tables for a terminal.

The engine and ``/system/df`` are read once, now. Drift and newer versions come from what
the running exporter saved in its state store (and the report says how old that is), or,
with ``--check``, from one check cycle run here and now.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from exporter import status
from exporter.config import Config
from exporter.snapshots import DiskSnapshot, EngineSnapshot, UpstreamSnapshot, VersionsSnapshot
from exporter.sources.disk import DiskReader
from exporter.sources.engine import Engine, EngineError
from exporter.sources.inventory import EngineReader
from exporter.sources.loop import Source
from exporter.status import (
    NO_DATE,
    ContainerRow,
    Knowledge,
    SourceRow,
    Status,
    ago,
    human_age,
    human_size,
    registry_reason,
    short_id,
)

__all__ = ["ReportError", "collect", "human_age", "human_size", "render"]

T = TypeVar("T")

MAX_ROWS = 50  # rows per table, besides the oldest images


class ReportError(Exception):
    """The engine cannot be read: the report has nothing to say (exit 1)."""


@dataclass
class _Drift:
    upstream: UpstreamSnapshot | None
    versions: VersionsSnapshot | None
    drift: Knowledge
    versions_knowledge: Knowledge
    sources: list[SourceRow]


def collect(cfg: Config, check: bool = False) -> Status:
    """Read the engine and /system/df once, and drift from the store or a check cycle."""
    if cfg.cri_endpoint:
        raise ReportError("report reads Docker or Podman only; on a Kubernetes node the "
                          "running exporter's /status.json is the same document")
    host = cfg.docker_host
    started = time.monotonic()
    engine_api = Engine(host, cfg.docker_timeout)
    try:
        engine = EngineReader(engine_api).read()
    except EngineError as exc:
        raise ReportError(status.explain(f"{exc.reason}: {exc.detail}", "engine", host)) \
            from None
    finally:
        engine_api.close()
    read_at = time.time()
    sources = [SourceRow("engine", "ok", read_at, time.monotonic() - started, "", "")]
    disk, disk_row = _disk(cfg)
    sources.append(disk_row)
    drift = _checked(cfg, engine) if check else _saved(cfg)
    return status.build(
        docker_host=host, engine=engine, engine_as_of=read_at, disk=disk,
        disk_as_of=disk_row.last_success, upstream=drift.upstream, versions=drift.versions,
        drift=drift.drift, versions_knowledge=drift.versions_knowledge,
        sources=sources + drift.sources)


def _disk(cfg: Config) -> tuple[DiskSnapshot | None, SourceRow]:
    started = time.monotonic()
    engine = Engine(cfg.docker_host, cfg.collector_disk_timeout)
    try:
        disk = DiskReader(engine).read()
    except EngineError as exc:
        error = f"{exc.reason}: {exc.detail}"
        return None, SourceRow("disk", "failing", None, time.monotonic() - started, error,
                               status.explain(error, "disk", cfg.docker_host))
    finally:
        engine.close()
    return disk, SourceRow("disk", "ok", time.time(), time.monotonic() - started, "", "")


def _off(cfg: Config) -> str:
    if cfg.upstream_mode == "off":
        return "upstream checks are off (upstream.mode off)"
    if cfg.upstream_mode == "central":
        return "this is the fleet's central checker (upstream.mode central)"
    return ""


def _saved(cfg: Config) -> _Drift:
    """What the running exporter last saved, and when."""
    from exporter.state import default_path

    off = _off(cfg)
    if off:
        return _Drift(None, None, Knowledge("off", None, off), Knowledge("off", None, off), [])
    path = cfg.state_path or default_path()
    upstream, drift = _load(path, "upstream", status.upstream_from_json)
    versions, known = _load(path, "versions", status.versions_from_json) \
        if cfg.versions_enabled else (None, Knowledge("off", None, "versions.enabled is false"))
    return _Drift(upstream, versions, drift, known, [])


def _load(path: str, name: str, parse: Callable[[str], T]) -> tuple[T | None, Knowledge]:
    from exporter.state import read_snapshot

    saved = read_snapshot(path, name)
    if saved is None:
        return None, Knowledge("none", None, f"nothing saved in {path}: run the exporter with "
                                             "this state.path, or report --check")
    try:
        return parse(saved[1]), Knowledge("state store", saved[0], path)
    except ValueError as exc:
        return None, Knowledge("none", None, f"{path}: {exc}")


def _checked(cfg: Config, engine: EngineSnapshot) -> _Drift:
    """One upstream cycle (and one versions cycle when enabled), here and now."""
    from exporter.sources.hub import HubAPI
    from exporter.sources.upstream import make_source
    from exporter.sources.versions import VersionChecker

    off = _off(cfg)
    if off:
        return _Drift(None, None, Knowledge("off", None, off), Knowledge("off", None, off), [])
    engine_source: Source[EngineSnapshot] = Source("engine", lambda: engine, 1.0)
    engine_source.snapshot = engine  # read already; the checkers wait for this
    engine_source.ready.set()
    checker = make_source(cfg, engine_source)
    hub = HubAPI(cfg.hub_url, cfg.hub_username, cfg.hub_password,
                 policy=checker.client.policy) if cfg.hub_enabled and cfg.versions_enabled \
        else None
    try:
        upstream, upstream_row = _run("upstream", checker.checks.cycle, cfg.docker_host)
        versions, versions_row = None, None
        if cfg.versions_enabled:
            finder = VersionChecker(cfg, engine_source, checker, hub)
            try:
                versions, versions_row = _run("versions", finder.run, cfg.docker_host)
            finally:
                finder.close()
    finally:
        checker.close()
        if hub is not None:
            hub.close()
    now = time.time()

    def known(snapshot: object, row: SourceRow | None) -> Knowledge:
        if row is None:
            return Knowledge("off", None, "versions.enabled is false")
        if snapshot is None:
            return Knowledge("none", None, f"the check failed: {row.reason}")
        return Knowledge("check", now, "checked by this report")

    return _Drift(upstream, versions, known(upstream, upstream_row),
                  known(versions, versions_row),
                  [r for r in (upstream_row, versions_row) if r is not None])


def _run(name: str, cycle: Callable[[], T], docker_host: str) -> tuple[T | None, SourceRow]:
    """One cycle, timed; a failure becomes the row's error, as a source's would."""
    started = time.monotonic()
    try:
        result = cycle()
    except Exception as exc:
        error = repr(exc)
        return None, SourceRow(name, "failing", None, time.monotonic() - started, error,
                               status.explain(error, name, docker_host))
    return result, SourceRow(name, "ok", time.time(), time.monotonic() - started, "", "")


# -- text ------------------------------------------------------------------------------------


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    return ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
            for row in [header, *rows]]


def _age(when: float | None, now: float) -> str:
    return human_age(now - when) if when is not None else "-"


def _more(rows: Sequence[object], limit: int = MAX_ROWS) -> list[str]:
    return [f"... and {len(rows) - limit} more (report --format json has them all)"] \
        if len(rows) > limit else []


def _for(when: float | None, now: float) -> str:
    return f" for {human_age(now - when)}" if when is not None else ""


def _problems(c: ContainerRow, now: float) -> str:
    out = []
    if c.drifted:
        out.append("drifted" + _for(c.drift_since, now))
    if c.stale:
        out.append("stale" + _for(c.stale_since, now))
    if c.newer_version:
        version = "" if c.newer_version == "newer" else f" {c.newer_version}"
        behind = f" ({c.versions_behind} behind)" if c.versions_behind else ""
        out.append(f"newer version{version}{behind}" + _for(c.newer_since, now))
    return "; ".join(out)


def _knowledge(k: Knowledge, what: str, now: float) -> str:
    if k.origin == "off":
        return f"{what}: off ({k.detail})"
    if k.origin == "none":
        return f"{what}: not known ({k.detail})"
    if k.origin == "check":
        return f"{what}: checked now by this report"
    # "just now" under 5 s, as the page says it: never "1 seconds".
    known = ago(k.as_of, now) if k.as_of is not None else "at a time not recorded"
    if k.origin == "state store":
        return f"{what}: as the running exporter knew it {known} (state store {k.detail})"
    return f"{what}: as known {known}"


def render(s: Status, oldest: int = 10) -> str:
    now = s.generated
    out = [f"DOCKER HOST {s.docker_host}" + (f" (Engine API {s.engine_api})"
                                             if s.engine_api else "")]

    out += ["", "DISK USAGE (most reclaimable first)"]
    if s.disk is None:
        disk = next((x for x in s.sources if x.name == "disk"), None)
        out.append(f"  /system/df could not be read: {disk.reason if disk else 'not read'}")
    else:
        rows = []
        for r in s.disk.kinds:
            pct = f" ({100 * r.reclaimable_bytes / r.size_bytes:.0f}%)" if r.size_bytes else ""
            rows.append([r.kind, str(r.objects), str(r.active), human_size(r.size_bytes),
                         human_size(r.reclaimable_bytes) + pct])
        out += _table(["KIND", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"], rows)
        out.append(f"Reclaimable: {human_size(s.disk.reclaimable_bytes)} of "
                   f"{human_size(s.disk.size_bytes)}")
        volumes = s.disk.volumes
        unused = [v for v in volumes if v.containers == 0]
        out += ["", f"VOLUMES: {len(volumes)}, {len(unused)} unused "
                    f"({human_size(sum(v.size_bytes or 0 for v in unused))}; unused first)"]
        if volumes:
            out += _table(["VOLUME", "SIZE", "CONTAINERS"], [
                [v.name, human_size(v.size_bytes) if v.size_bytes is not None else "-",
                 str(v.containers) if v.containers is not None else "-"]
                for v in volumes[:MAX_ROWS]]) + _more(volumes)

    attention = s.attention
    counts = {p: sum(1 for c in attention if p in c.problems)
              for p in ("drifted", "stale", "newer_version")}
    out += ["", f"CONTAINERS NEEDING ATTENTION: {len(attention)} of {len(s.containers)} "
                f"(drifted {counts['drifted']}, stale {counts['stale']}, newer version "
                f"{counts['newer_version']}; worst first, ages say since when)"]
    if attention:
        out += _table(["CONTAINER", "STATE", "IMAGE", "PROBLEMS"], [
            [c.name, c.state, c.image, _problems(c, now)] for c in attention[:MAX_ROWS]])
        out += _more(attention)

    out += ["", "TAGS AGAINST THEIR REGISTRIES",
            _knowledge(s.drift, "Drift", now), _knowledge(s.versions, "Newer versions", now)]
    flagged = [t for t in s.tags if t.attention]
    if flagged:
        out += _table(["TAG", "UPSTREAM", "SINCE", "NEWER VERSION", "CHECKED", "CONTAINERS"], [
            [t.image, t.upstream + (f" ({registry_reason(t.reason)})" if t.reason else ""),
             _age(t.drift_since, now) if t.upstream == "drifted" else "-",
             (f"{t.newer_version} ({t.versions_behind} behind, "
              f"{_age(t.newer_since, now)})" if t.newer_version else "-"),
             ago(t.checked, now) if t.checked else "-",
             ", ".join(t.containers) or "-"] for t in flagged[:MAX_ROWS]])
        out += _more(flagged)
    local = sum(1 for t in s.tags if t.reason == "no_repo_digest")
    rest = len(s.tags) - len(flagged) - local
    out.append(f"Other tags: {rest} current with no newer version, {local} local builds "
               "(no registry digest, nothing upstream to compare).")

    out += ["", f"OLDEST IMAGES ({min(oldest, len(s.images))} of {len(s.images)})"]
    out += _table(["IMAGE", "ID", "AGE", "TAGGED HERE", "SIZE", "CONTAINERS"], [
        [i.name, short_id(i.id), human_age(now - i.created) if i.built is not None else NO_DATE,
         ago(i.last_tagged, now) if i.last_tagged else "-",
         human_size(i.size_bytes), str(i.containers)] for i in s.images[:oldest]])

    dangling = [i for i in s.images if not i.tags]
    out += ["", f"DANGLING IMAGES: {len(dangling)} "
                f"({human_size(sum(i.size_bytes for i in dangling))})"]

    out += ["", "PULLS: counted by a running exporter only (its status page, /status.json "
                "and the docker_*pulls_total metrics)"]

    failing = [x for x in s.sources if x.state != "ok"]
    if failing:
        out += ["", "PROBLEMS READING"]
        out += [f"  {x.name}: {x.reason or x.error}" for x in failing]
    return "\n".join(out) + "\n"
