"""When this host last pulled or tagged an image, where the engine does not record it.

dockerd records ``LastTagTime`` only for ``docker tag`` (not for pulls) and Podman never does,
so the exporter keeps, per tag, the image ID it names and when it first saw it name that ID.
A pure function of what the engine lists, so it is tested without an engine.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class TagSeen:
    """What one tag named, and since when as far as this exporter knows."""

    image: str  # the image ID the tag names
    seen: float  # when the exporter first saw the tag name that ID (or the pull event's time)
    after: float  # the tag did not name it yet then (the read before): a pull event's time
    # between ``after`` and ``seen`` is when it happened (events may arrive after the read)


def tags_seen(known: Mapping[str, TagSeen], current: Mapping[str, str], now: float,
              since: float, pulled: Mapping[str, float]) -> dict[str, TagSeen]:
    """The records after a read that found each tag in ``current`` naming its image ID.

    A new tag, or one that names another ID now, is first seen ``now`` (the read's answer),
    having changed after ``since`` (the start of the read before, 0 for the first). The time
    of a pull of that tag seen in the event stream (``pulled``: the latest per tag) inside
    that window is more exact and replaces it, also when the event arrives a read late. The
    same ID keeps its time; tags no longer present are forgotten.
    """
    out = {}
    for tag, image in current.items():
        record = known.get(tag)
        if record is None or record.image != image:
            record = TagSeen(image, now, since)
        event = pulled.get(tag)
        if event is not None and record.after < event < record.seen:
            record = TagSeen(image, event, record.after)
        out[tag] = record
    return out


def last_tagged(tags: Mapping[str, TagSeen]) -> dict[str, float]:
    """Per image ID, the latest first-seen time among its tags: when it was last pulled or
    tagged here."""
    out: dict[str, float] = {}
    for record in tags.values():
        out[record.image] = max(out.get(record.image, record.seen), record.seen)
    return out
