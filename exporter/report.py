"""``docker-hygiene-exporter report``: the exporter's facts as tables for a person."""

from __future__ import annotations

import time
from collections.abc import Sequence

from exporter.snapshots import DiskSnapshot, EngineSnapshot, Image

_UNITS = ("B", "kB", "MB", "GB", "TB", "PB")


def human_size(size: float) -> str:
    """Decimal units with four significant digits, as the docker CLI prints sizes."""
    i = 0
    while size >= 1000 and i < len(_UNITS) - 1:
        size /= 1000
        i += 1
    return f"{size:.4g}{_UNITS[i]}"


def human_age(seconds: float) -> str:
    for unit, size in (("years", 365 * 86400), ("days", 86400), ("hours", 3600),
                       ("minutes", 60)):
        if seconds >= 2 * size:
            return f"{int(seconds // size)} {unit}"
    return f"{int(max(seconds, 0))} seconds"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    return ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
            for row in [header, *rows]]


def _name(image: Image) -> str:
    if image.tags:
        return image.tags[0] + (f" (+{len(image.tags) - 1} tags)" if len(image.tags) > 1 else "")
    return "<none>"


def render(engine: EngineSnapshot, disk: DiskSnapshot | None, oldest: int = 10,
           now: float | None = None) -> str:
    now = time.time() if now is None else now
    out = ["DISK USAGE"]
    if disk is None:
        out.append("  (the engine did not answer /system/df)")
    else:
        rows = []
        for kind, u in disk.by_kind().items():
            pct = f" ({100 * u.reclaimable / u.size:.0f}%)" if u.size else ""
            rows.append([kind, str(u.total), str(u.active), human_size(u.size),
                         human_size(u.reclaimable) + pct])
        out += _table(["KIND", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"], rows)

    out += ["", f"OLDEST IMAGES (up to {oldest})"]
    images = sorted(engine.images, key=lambda i: i.created)[:oldest]
    out += _table(["IMAGE", "ID", "AGE", "SIZE", "CONTAINERS"], [
        [_name(i), i.id.removeprefix("sha256:")[:12], human_age(now - i.created),
         human_size(i.size), str(i.containers)] for i in images])

    dangling = [i for i in engine.images if i.dangling]
    out += ["", f"DANGLING IMAGES: {len(dangling)} "
                f"({human_size(sum(i.size for i in dangling))})"]

    stale = [c for c in engine.containers if c.stale]
    out += ["", f"STALE CONTAINERS: {len(stale)} (their tag now names a newer local image)"]
    if stale:
        out += _table(["CONTAINER", "STATE", "IMAGE", "RUNS IMAGE ID"], [
            [c.name, c.state, c.image, c.image_id.removeprefix("sha256:")[:12]] for c in stale])
    return "\n".join(out) + "\n"
