"""Round trips of one drift check of a moved multi-arch tag, against a real registry.

A real CNCF Distribution behind ``FaultProxy`` in delay mode: every exporter request waits
``DELAY`` at the proxy, so a check's wall time divided by ``DELAY`` is the number of
requests it made one after another (the registry's own answer takes milliseconds on
loopback). The host is the suite's real dockerd (classic image store): it pulls the index,
so its image ID is this platform's config digest and its RepoDigest the index's.

What is measured, per moved tag:

- the requests, from the proxy's counts (method, path; the exporter's User-Agent only);
- the decision's round trips: when the last request the decision needs (the tag's HEAD, the
  new index, this platform's manifest) was answered, from the start of the check;
- the whole check's round trips, build time and signature included: its wall time.

Before each measurement one check runs while the tag is current: the first contact with the
registry (GET /v2/, the scheme) and the referrers API probe are per registry, not per tag.
"""

from __future__ import annotations

import datetime
import re
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest

from exporter.decisions import provenance
from exporter.decisions.signatures import cosign_tag, referrers_tag
from exporter.registry.client import RegistryClient
from exporter.registry.content import ContentCache
from exporter.registry.credentials import CredentialStore
from exporter.registry.policy import RequestPolicy
from exporter.snapshots import EngineSnapshot, Image
from exporter.sources.engine import Engine
from exporter.sources.upstream import DriftCheck, EngineFacts, Outcome, Target, targets
from exporter.state import StateStore
from tests.registries import (
    FaultProxy,
    get_manifest,
    push_variant,
    put_cosign_signature,
    put_index,
)
from tests.services import Dockerd, Registry

DELAY = 0.5  # seconds the proxy holds each exporter request: well above its own cost
NOTATION = "application/vnd.cncf.notary.signature"
BUILT = "2026-02-01T00:00:00Z"  # the new image's build time


@dataclass
class Tag:
    name: str  # repository path in the registry
    target: Target  # what the host has: the old index, pulled
    old_index: str
    here: str  # this host's architecture
    other: str  # the index's other platform
    new_index: str = ""
    new_manifest: str = ""
    new_config: str = ""


@pytest.fixture
def proxy(registry: Registry) -> Iterator[FaultProxy]:
    p = FaultProxy(registry.port).start()
    yield p
    p.stop()


def publish(dockerd: Dockerd, registry: Registry, proxy: FaultProxy, name: str) -> Tag:
    """A two-platform index under ``name:latest``, pulled by the host through the proxy."""
    here = dockerd.arch()
    other = "s390x" if here != "s390x" else "amd64"
    dockerd.cli("tag", "hygiene-base:1", f"{registry.address}/{name}:base")
    dockerd.push(f"{registry.address}/{name}:base")
    base = get_manifest(registry.address, name, "base")
    push_variant(registry.address, name, "here-1", base, "2026-01-01T00:00:00Z", here)
    push_variant(registry.address, name, "other-1", base, "2026-01-01T00:00:00Z", other)
    index = put_index(registry.address, name, "latest", [("here-1", here), ("other-1", other)])
    ref = f"{proxy.address}/{name}:latest"
    dockerd.pull(ref)
    image_id = dockerd.image_id(ref)
    old_config = get_manifest(registry.address, name, "here-1")["config"]["digest"]
    assert image_id == old_config, "the classic store's image ID is the config digest"
    digests = tuple(dockerd.cli("image", "inspect", "-f",
                                '{{join .RepoDigests " "}}', ref).split())
    assert f"{proxy.address}/{name}@{index}" in digests
    image = Image(image_id, (ref,), digests, 0, 0.0, None, 0)
    [target] = targets(EngineSnapshot((image,), (), "1.41"), [], [])
    return Tag(name, target, index, here, other)


def move(registry: Registry, tag: Tag) -> None:
    """Another machine rebuilds this platform's image and moves the tag on."""
    base = get_manifest(registry.address, tag.name, "here-1")
    tag.new_manifest = push_variant(registry.address, tag.name, "here-2", base, BUILT,
                                    tag.here)
    tag.new_config = get_manifest(registry.address, tag.name, "here-2")["config"]["digest"]
    tag.new_index = put_index(registry.address, tag.name, "latest",
                              [("here-2", tag.here), ("other-1", tag.other)])


@pytest.fixture
def check(dockerd: Dockerd) -> Iterator[DriftCheck]:
    # fresh_for=0: the moved tag's HEAD is not answered from the warm-up's.
    client = RegistryClient(CredentialStore({}, None), lambda r: True,
                            RequestPolicy(timeout=10), fresh_for=0)
    engine = Engine(dockerd.host, 10)
    facts = EngineFacts(engine, 3600)
    facts.refresh()
    assert facts.store() == provenance.CLASSIC
    store = StateStore(None)
    drift = DriftCheck(client, ContentCache(client, store), facts, 3600)
    yield drift
    drift.close()
    client.close()
    engine.close()
    store.close()


@dataclass
class Measured:
    outcome: Outcome
    requests: Counter[tuple[str, str]]
    decision_rounds: int
    rounds: int


def measure(check: DriftCheck, proxy: FaultProxy, tag: Tag) -> Measured:
    proxy.counts.clear()
    proxy.timeline.clear()
    pool = ThreadPoolExecutor(1)
    try:  # a check that hung fails the test after a minute instead of hanging it
        started = time.monotonic()
        outcome = pool.submit(check, tag.target).result(timeout=60)
        wall = time.monotonic() - started
    finally:
        pool.shutdown(wait=False)
    time.sleep(DELAY * 2)  # requests still in flight (a signature task left behind) land
    # What the decision may read: the tag, the new index, its entry for this platform, and
    # (where the image ID does not decide) the index this host pulled.
    decision = {f"/v2/{tag.name}/manifests/latest",
                f"/v2/{tag.name}/manifests/{tag.new_index}",
                f"/v2/{tag.name}/manifests/{tag.new_manifest}",
                f"/v2/{tag.name}/manifests/{tag.old_index}"}
    decided = max(end for _, end, _, path in proxy.timeline if path in decision)
    m = Measured(outcome, Counter(proxy.counts), round((decided - started) / DELAY),
                 round(wall / DELAY))
    print(f"\n{tag.name}: {sum(m.requests.values())} requests, decided after "
          f"{m.decision_rounds} round trips, whole check {m.rounds} ({wall:.3f}s)")
    for begun, answered, method, path in sorted(proxy.timeline):
        print(f"  {begun - started:6.3f} {answered - started:6.3f} {method} {path}")
    return m


def warm_up(check: DriftCheck, proxy: FaultProxy, tag: Tag) -> None:
    outcome = check(tag.target)
    assert outcome.status == "current", outcome
    proxy.mode, proxy.delay = "delay", DELAY


def expected(tag: Tag, referrers_api: bool) -> Counter[tuple[str, str]]:
    path = f"/v2/{tag.name}"
    look = ("GET", f"{path}/referrers/{tag.new_index}") if referrers_api else (
        "GET", f"{path}/manifests/{referrers_tag(tag.new_index)}")
    return Counter({("HEAD", f"{path}/manifests/latest"): 1,
                    ("GET", f"{path}/manifests/{tag.new_index}"): 1,
                    ("GET", f"{path}/manifests/{tag.new_manifest}"): 1,
                    ("GET", f"{path}/blobs/{tag.new_config}"): 1,
                    look: 1,
                    ("HEAD", f"{path}/manifests/{cosign_tag(tag.new_index)}"): 1})


def test_moved_tag_is_decided_in_three_round_trips(dockerd: Dockerd, registry: Registry,
                                                   proxy: FaultProxy, check: DriftCheck
                                                   ) -> None:
    tag = publish(dockerd, registry, proxy, "hygiene/rt-unsigned")
    warm_up(check, proxy, tag)
    move(registry, tag)
    m = measure(check, proxy, tag)
    assert (m.outcome.status, m.outcome.digest, m.outcome.config, m.outcome.manifest) == (
        "drifted", tag.new_index, tag.new_config, tag.new_manifest)
    assert m.outcome.signed is False
    assert m.outcome.created == datetime.datetime.fromisoformat(BUILT).timestamp()
    # Six requests; the index the host pulled is never asked for.
    assert m.requests == expected(tag, referrers_api=False)
    assert not [path for _, path in m.requests if tag.old_index in path]
    assert m.decision_rounds <= 3
    assert m.rounds <= 4


@pytest.mark.parametrize("where", ["cosign_tag", "referrers_api"])
def test_signed_moved_tag(dockerd: Dockerd, registry: Registry, proxy: FaultProxy,
                          check: DriftCheck, where: str) -> None:
    tag = publish(dockerd, registry, proxy, f"hygiene/rt-signed-{where.replace('_', '-')}")
    if where == "referrers_api":
        proxy.referrers = {}  # the registry serves the API (the warm-up learns so)
    warm_up(check, proxy, tag)
    move(registry, tag)
    if where == "cosign_tag":
        put_cosign_signature(registry.address, tag.name, tag.new_index)
    else:
        assert proxy.referrers is not None
        proxy.referrers[tag.new_index] = [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "size": 400,
            "digest": "sha256:" + "5" * 64, "artifactType": NOTATION}]
    m = measure(check, proxy, tag)
    assert (m.outcome.status, m.outcome.signed) == ("drifted", True)
    assert m.requests == expected(tag, referrers_api=where == "referrers_api")
    assert m.decision_rounds <= 3
    assert m.rounds <= 4


def test_failed_signature_look_up_leaves_the_drift_decided(
        dockerd: Dockerd, registry: Registry, proxy: FaultProxy, check: DriftCheck) -> None:
    tag = publish(dockerd, registry, proxy, "hygiene/rt-failing")
    warm_up(check, proxy, tag)
    move(registry, tag)
    # The referrers tag and cosign's tag answer 500: the registry is failing, and the
    # request policy leaves it alone from then on (the config blob is not asked for).
    proxy.fail = (r"/manifests/sha256-[0-9a-f]{64}(\.sig)?$", 500)
    m = measure(check, proxy, tag)
    assert (m.outcome.status, m.outcome.digest, m.outcome.config) == (
        "drifted", tag.new_index, tag.new_config)
    assert m.outcome.signed is None
    failed = Counter({k: v for k, v in m.requests.items() if re.search(proxy.fail[0], k[1])})
    assert sum(failed.values()) == 2, m.requests
    assert not [path for _, path in m.requests if "/blobs/" in path]
    assert m.outcome.created is None
    assert m.decision_rounds <= 3
    assert m.rounds <= 4


def test_tags_of_one_image_checked_at_once_look_for_its_signature_once(
        dockerd: Dockerd, registry: Registry, proxy: FaultProxy, check: DriftCheck) -> None:
    """Eight tags that name the same index (`1`, `1.2`, `latest`, ...), checked at the same
    time as the loop's workers check them: one HEAD each, and one signature look-up for
    the image they share (the referrers tag and cosign's tag once each, not eight times),
    whose answer every check gets."""
    from dataclasses import replace

    from exporter import reference

    tag = publish(dockerd, registry, proxy, "hygiene/rt-shared")
    names = [f"v{i}" for i in range(7)]
    for name in names:
        assert put_index(registry.address, tag.name, name,
                         [("here-1", tag.here), ("other-1", tag.other)]) == tag.old_index
    put_cosign_signature(registry.address, tag.name, tag.old_index)
    checks = [tag.target] + [
        replace(tag.target, image=f"{proxy.address}/{tag.name}:{name}",
                ref=reference.parse(f"{proxy.address}/{tag.name}:{name}")) for name in names]
    # The registry is contacted once first (GET /v2/), so that what is counted is what the
    # eight checks ask.
    proxy.mode, proxy.delay = "delay", 0.2
    check.client.head_digest(proxy.address, tag.name, "base")
    proxy.counts.clear()
    with ThreadPoolExecutor(len(checks)) as pool:
        outcomes = list(pool.map(check, checks, timeout=60))
    assert [(o.status, o.signed) for o in outcomes] == [("current", True)] * len(checks)
    time.sleep(0.4)  # a look-up's other half, still under way when the signature was found
    path = f"/v2/{tag.name}/manifests"
    heads = {("HEAD", f"{path}/{t.ref.tag}") for t in checks}
    assert {k: proxy.counts[k] for k in heads} == dict.fromkeys(heads, 1)
    look_up = {k: n for k, n in proxy.counts.items() if k not in heads}
    # Whichever of the referrers API, its tag schema and cosign's tag it asked, once each.
    assert ("HEAD", f"{path}/{cosign_tag(tag.old_index)}") in look_up, proxy.counts
    assert set(look_up.values()) == {1}, proxy.counts
