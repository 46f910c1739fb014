"""Fleet mode: the digest each of the fleet's tags names upstream, from the central checker.

Sample output::

    docker_registry_tag_digest_info{digest="sha256:4e3f...",image="nginx:1.25"} 1.0
    docker_registry_tag_changed_timestamp_seconds{image="nginx:1.25"} 1.7958e+09
    docker_registry_tag_last_check_timestamp_seconds{image="nginx:1.25"} 1.7958e+09

Hosts run with ``--upstream.mode=off``; recording rules join these series with every host's
``docker_image_info`` (same ``image`` label) to give per-host and per-container drift.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric

from exporter.collectors import SnapshotCollector, cached
from exporter.collectors.upstream import registry_families


class FleetCollector(SnapshotCollector):
    def collect(self) -> Iterator[Metric]:
        snap = self.source.snapshot
        if snap is None:
            return
        note = cached(self.interval, "registries")
        info = GaugeMetricFamily(
            "docker_registry_tag_digest_info",
            "The digest the registry last served for the tag; always 1." + note,
            labels=["image", "digest"])
        changed = GaugeMetricFamily(
            "docker_registry_tag_changed_timestamp_seconds",
            "When the central checker first saw the tag's current digest: the upstream "
            "change, or the first check of the tag." + note, labels=["image"])
        checked = GaugeMetricFamily(
            "docker_registry_tag_last_check_timestamp_seconds",
            "When the tag's digest was last read successfully." + note, labels=["image"])
        for s in snap.states:
            if s.upstream_digest:
                info.add_metric([s.image, s.upstream_digest], 1)
            if s.changed is not None:
                changed.add_metric([s.image], s.changed)
            if s.checked is not None:
                checked.add_metric([s.image], s.checked)
        yield from (info, changed, checked)
        yield from registry_families(snap)
