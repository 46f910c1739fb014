"""Timestamps as the engine and registries write them (RFC 3339 with nanoseconds), and which
image dates are a reproducible build's placeholder rather than a build time."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

_RFC3339 = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)")


def parse_timestamp(text: Any) -> float | None:
    """RFC 3339 with nanoseconds, as the engine writes it; None for Go's zero time or junk."""
    if not isinstance(text, str):
        return None
    m = _RFC3339.fullmatch(text.strip())
    if not m or m.group(1).startswith("0001-"):
        return None
    frac = (m.group(2) or "0")[:6].ljust(6, "0")
    zone = "+00:00" if m.group(3) == "Z" else m.group(3)
    return datetime.fromisoformat(f"{m.group(1)}.{frac}{zone}").timestamp()


# 2013-03-13T00:00:00Z, days before Docker's first release: no image was built earlier.
PLACEHOLDER_BEFORE = 1363132800
"""An image config whose ``created`` is before this carries a placeholder, not a build time.
Reproducible builds (distroless, ko, Nix, Paketo) write a fixed date, 1970-01-01 or
1980-01-01, so that the same sources give the same digest whenever they are built. Such an
image is not "56 years old": the status page and ``report`` show it as a reproducible build
with no date, and the shipped alert rules leave it out of image-age alerts (with this same
cut-off). ``docker_image_created_timestamp_seconds`` still exports the date as the config
says it."""


def build_time(created: float | None) -> float | None:
    """When the image was built: ``created``, or None when that is a reproducible build's
    placeholder date (before PLACEHOLDER_BEFORE) or unknown."""
    return created if created is not None and created >= PLACEHOLDER_BEFORE else None
