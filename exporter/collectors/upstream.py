"""Upstream drift per local tag and per container, and what the registries answered.

Sample output::

    docker_image_upstream_status{image="nginx:1.25",reason="",status="current"} 0.0
    docker_image_upstream_status{image="nginx:1.25",reason="",status="drifted"} 1.0
    docker_image_upstream_status{image="nginx:1.25",reason="",status="platform_unchanged"} 0.0
    docker_image_upstream_status{image="nginx:1.25",reason="",status="unknown"} 0.0
    docker_image_upstream_drift{image="nginx:1.25"} 1.0
    docker_image_upstream_drift_since_timestamp_seconds{image="nginx:1.25"} 1.7958e+09
    docker_image_upstream_last_check_timestamp_seconds{image="nginx:1.25"} 1.7958e+09
    docker_image_upstream_signed{image="nginx:1.25"} 0.0
    docker_image_upstream_created_timestamp_seconds{image="nginx:1.25"} 1.7957e+09
    docker_container_upstream_drift{container="web",image="nginx:1.25"} 1.0
    docker_registry_ratelimit_limit{registry="docker.io"} 100.0
    docker_registry_ratelimit_remaining{registry="docker.io"} 76.0
    docker_registry_requests_total{code="200",method="HEAD",registry="docker.io"} 12.0
    docker_registry_digest_fallbacks_total{registry="quay.example"} 1.0
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from exporter.collectors import SnapshotCollector, cached
from exporter.decisions.drift import container_state
from exporter.snapshots import UPSTREAM_STATUSES, EngineSnapshot, UpstreamSnapshot
from exporter.sources.loop import Source
from exporter.timestamps import build_time


class UpstreamCollector(SnapshotCollector):
    def __init__(self, source: Source[UpstreamSnapshot], engine: Source[EngineSnapshot],
                 interval: float) -> None:
        super().__init__(source, interval)
        self.engine = engine

    def cache_key(self) -> tuple[object, ...]:
        return (self.source.snapshot, self.engine.snapshot)

    def collect(self) -> Iterator[Metric]:
        snap = self.source.snapshot
        if snap is None:
            return
        note = cached(self.interval, "registries")
        status = GaugeMetricFamily(
            "docker_image_upstream_status",
            "1 for the tag's upstream state in force (current, drifted, platform_unchanged, "
            "unknown; reason says why unknown), 0 for the others." + note,
            labels=["image", "status", "reason"])
        drift = GaugeMetricFamily(
            "docker_image_upstream_drift",
            "1 when the registry serves other content for the tag on this platform, 0 when "
            "not; while checks cannot decide, what the last deciding check said of this local "
            "image (its time: ..._last_check_timestamp_seconds); absent until one has."
            + note, labels=["image"])
        since = GaugeMetricFamily(
            "docker_image_upstream_drift_since_timestamp_seconds",
            "When drift of the tag was first seen; survives restarts and failed checks, clears "
            "when the local image matches upstream again." + note, labels=["image"])
        checked = GaugeMetricFamily(
            "docker_image_upstream_last_check_timestamp_seconds",
            "When a check last decided the tag's state (unknown results do not count)."
            + note, labels=["image"])
        signed = GaugeMetricFamily(
            "docker_image_upstream_signed",
            "1 when a signature exists for the digest the registry serves for the tag (a "
            "cosign, sigstore bundle or notation referrer, from the referrers API or the "
            "sha256-<hex> referrers tag; or cosign's sha256-<hex>.sig tag), else 0; "
            "attestations and SBOMs do not count; presence only, nothing is verified."
            + note, labels=["image"])
        created = GaugeMetricFamily(
            "docker_image_upstream_created_timestamp_seconds",
            "When the image the registry serves for the tag was built, for this platform "
            "(from its config); absent when that is a reproducible build's placeholder date "
            "(before 2013-03-13)." + note, labels=["image"])
        states = {}
        for s in snap.states:
            states[s.image] = s
            for value in UPSTREAM_STATUSES:
                in_force = value == s.status
                status.add_metric([s.image, value, s.reason if in_force else ""],
                                  1 if in_force else 0)
            if s.verdict:
                drift.add_metric([s.image], 1 if s.verdict == "drifted" else 0)
            if s.drift_since is not None:
                since.add_metric([s.image], s.drift_since)
            if s.checked is not None:
                checked.add_metric([s.image], s.checked)
            if s.signed is not None:
                signed.add_metric([s.image], 1 if s.signed else 0)
            if (built := build_time(s.created)) is not None:
                created.add_metric([s.image], built)
        yield from (status, drift, since, checked, signed, created)

        containers = GaugeMetricFamily(
            "docker_container_upstream_drift",
            "1 when the container does not run what the registry now serves for its tag "
            "(the tag drifted, or the container runs an older pull), else 0; like "
            "docker_image_upstream_drift, kept from the last deciding check while checks "
            "cannot decide." + note, labels=["container", "image", "namespace", "pod"])
        engine = self.engine.snapshot
        images = {i.id: i for i in engine.images} if engine else {}
        for c in engine.containers if engine else ():
            s = states.get(c.image)
            if s is None:
                continue
            value = container_state(s, images, c)
            if value is not None:
                containers.add_metric([c.name, c.image, c.namespace, c.pod], value)
        yield containers

        yield from registry_families(snap)


def registry_families(snap: UpstreamSnapshot) -> Iterator[Metric]:
    """What the registries answered: rate-limit headers, requests, digest fallbacks."""
    limit = GaugeMetricFamily(
        "docker_registry_ratelimit_limit",
        "The registry's request quota (RateLimit-Limit header) as last answered.",
        labels=["registry"])
    remaining = GaugeMetricFamily(
        "docker_registry_ratelimit_remaining",
        "Requests left in the registry's quota (RateLimit-Remaining) as last answered.",
        labels=["registry"])
    for registry, lim, rem in snap.ratelimits:
        if lim is not None:
            limit.add_metric([registry], lim)
        if rem is not None:
            remaining.add_metric([registry], rem)
    yield from (limit, remaining)
    requests = CounterMetricFamily(
        "docker_registry_requests",
        "Requests sent to registries and their token servers (method TOKEN), by HTTP "
        "status code, or timeout / error when none came back.",
        labels=["registry", "method", "code"])
    for (registry, method, code), count in snap.requests:
        requests.add_metric([registry, method, code], count)
    fallbacks = CounterMetricFamily(
        "docker_registry_digest_fallbacks",
        "HEADs answered without Docker-Content-Digest, so the manifest was fetched and "
        "hashed instead.", labels=["registry"])
    for registry, count in snap.digest_fallbacks:
        fallbacks.add_metric([registry], count)
    yield from (requests, fallbacks)
