"""Pull counts from every place pulls happen: this host, Docker Hub, Distribution, Harbor.

Sample output::

    docker_image_pulls_total{repository="nginx"} 3.0
    docker_hub_repository_pulls_total{repository="library/nginx"} 1.2e+10
    docker_hub_repository_stars{repository="library/nginx"} 20000.0
    docker_hub_repository_last_updated_timestamp_seconds{repository="library/nginx"} 1.79e+09
    docker_image_upstream_tag_last_pushed_timestamp_seconds{image="nginx:1.25"} 1.79e+09
    docker_registry_pulls_total{registry="registry.internal",repository="team/app"} 42.0
    docker_registry_pushes_total{registry="registry.internal",repository="team/app"} 7.0
    docker_harbor_repository_pulls_total{project="team",registry="harbor",repository="app"} 9.0
    docker_exporter_webhook_requests_total{code="401"} 1.0
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from exporter.collectors import SnapshotCollector, cached
from exporter.snapshots import HarborSnapshot, HubSnapshot
from exporter.sources.events import EventStream
from exporter.sources.loop import Source
from exporter.sources.webhook import DistributionWebhook

if TYPE_CHECKING:  # grpc costs 20 MB of memory: imported only on a CRI node
    from exporter.sources.containerd_events import ContainerdEvents


def pulls_collectors(events: EventStream | ContainerdEvents | None,
                     hub: Source[HubSnapshot] | None, webhook: DistributionWebhook | None,
                     harbor: Source[HarborSnapshot] | None) -> list[Any]:
    """One collector per place pulls are counted, in exposition order. The event stream's
    and the webhook's counts change any time and are built per scrape; Docker Hub's and
    Harbor's change once per read, so their text is kept until the next one."""
    out: list[Any] = []
    if events is not None:
        out.append(HostPullsCollector(events))
    if hub is not None:
        out.append(HubCollector(hub, hub.interval))
    if webhook is not None:
        out.append(WebhookCollector(webhook))
    if harbor is not None:
        out.append(HarborCollector(harbor, harbor.interval))
    return out


class HostPullsCollector:
    def __init__(self, events: EventStream | ContainerdEvents) -> None:
        self.events = events

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        pulls = CounterMetricFamily(
            "docker_image_pulls",
            "Image pulls on this host seen in the engine's event stream since the exporter "
            "started.", labels=["repository"])
        for repository, count in self.events.counts():
            pulls.add_metric([repository], count)
        yield pulls


class HubCollector(SnapshotCollector):
    def collect(self) -> Iterator[Metric]:
        snap = self.source.snapshot
        if snap is None:
            return
        note = cached(self.interval, "the Docker Hub API")
        hub_pulls = CounterMetricFamily(
            "docker_hub_repository_pulls",
            "Pulls of the repository as Docker Hub counts them; never lower than before (a "
            "lower count upstream is logged and held at the highest seen); past the cap, "
            "repository=\"_other\" sums the rest." + note,
            labels=["repository"])
        stars = GaugeMetricFamily("docker_hub_repository_stars",
                                  "Stars of the repository on Docker Hub "
                                  "(_other: summed)." + note,
                                  labels=["repository"])
        updated = GaugeMetricFamily(
            "docker_hub_repository_last_updated_timestamp_seconds",
            "When the repository was last pushed to, as Docker Hub says (_other: the "
            "latest)." + note,
            labels=["repository"])
        for r in snap.repositories:
            hub_pulls.add_metric([r.repository], r.pulls)
            stars.add_metric([r.repository], r.stars)
            if r.last_updated is not None:
                updated.add_metric([r.repository], r.last_updated)
        pushed = GaugeMetricFamily(
            "docker_image_upstream_tag_last_pushed_timestamp_seconds",
            "When the local tag was last pushed to Docker Hub (tag_last_pushed; _other: "
            "the latest)." + note,
            labels=["image"])
        for image, when in snap.tags:
            pushed.add_metric([image], when)
        yield from (hub_pulls, stars, updated, pushed)


class WebhookCollector:
    def __init__(self, webhook: DistributionWebhook) -> None:
        self.webhook = webhook

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        pulls_by_repo, pushes, responses = self.webhook.snapshot()
        reg_pulls = CounterMetricFamily(
            "docker_registry_pulls",
            "Manifest GETs (pulls as Docker Hub counts them) reported by a Distribution "
            "registry's notifications since the exporter started.",
            labels=["registry", "repository"])
        for (registry, repository), count in pulls_by_repo:
            reg_pulls.add_metric([registry, repository], count)
        reg_pushes = CounterMetricFamily(
            "docker_registry_pushes",
            "Manifest pushes reported by a Distribution registry's notifications since the "
            "exporter started.", labels=["registry", "repository"])
        for (registry, repository), count in pushes:
            reg_pushes.add_metric([registry, repository], count)
        answered = CounterMetricFamily(
            "docker_exporter_webhook_requests",
            "Notification deliveries answered, by HTTP status (401: wrong secret, 400: not "
            "an envelope, 413: too large, 415: wrong content type).", labels=["code"])
        for code, count in responses:
            answered.add_metric([code], count)
        yield from (reg_pulls, reg_pushes, answered)


class HarborCollector(SnapshotCollector):
    def collect(self) -> Iterator[Metric]:
        snap = self.source.snapshot
        if snap is None:
            return
        harbor = CounterMetricFamily(
            "docker_harbor_repository_pulls",
            "Pulls of the repository as Harbor counts them; never lower than before (a lower "
            "count upstream is logged and held at the highest seen); past the cap, "
            "repository=\"_other\" sums the rest of the project."
            + cached(self.interval, "Harbor"),
            labels=["registry", "project", "repository"])
        for r in snap.repositories:
            harbor.add_metric([r.registry, r.project, r.repository], r.pulls)
        yield harbor
