"""Pulls on a containerd node, counted from containerd's event stream: against a real
containerd with CRI (tests/containerd.py), pulled the way the kubelet pulls, and over
synthetic event sequences shaped like the ones that containerd was seen to send."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.sources import containerd_api as api
from exporter.sources.containerd_events import ContainerdEvents
from tests.containerd import Containerd, config_digest, push_busybox
from tests.services import Registry, wait_for


class Store:
    """The two state-store calls a pull source makes."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def pulled_repositories(self) -> frozenset[str]:
        return frozenset()

    def seen_pulling(self, repository: str, when: float) -> None:
        self.seen.append(repository)


@pytest.fixture(scope="module")
def containerd(registry: Registry, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[Containerd]:
    daemon = Containerd(Path(tmp_path_factory.mktemp("ctd-events", numbered=True)),
                        registry.address)
    daemon.start()  # raises, with containerd's log, when it does not start
    try:
        yield daemon
    finally:
        daemon.stop()


def start(endpoint: str, store: Any = None) -> tuple[ContainerdEvents, threading.Event]:
    source = ContainerdEvents(endpoint, silence=1.0, retry=(0.05, 0.2), store=store)
    stop = threading.Event()
    source.start(stop)
    wait_for(lambda: source.status.success, 10, "the event stream to connect")
    return source, stop


@pytest.fixture
def store() -> Store:
    return Store()


@pytest.fixture
def events(containerd: Containerd, store: Store) -> Iterator[ContainerdEvents]:
    source, stop = start(containerd.endpoint, store)
    try:
        yield source
    finally:
        stop.set()
        source.join(5)
        assert source._thread is not None and not source._thread.is_alive()


def count(events: ContainerdEvents, repository: str) -> int:
    return dict(events.counts()).get(repository, 0)


def settle(events: ContainerdEvents, repository: str, expected: int) -> None:
    """Wait for ``expected`` pulls, then make sure no more arrive."""
    wait_for(lambda: count(events, repository) >= expected, 10,
             f"{expected} pulls of {repository}")
    time.sleep(0.3)
    assert count(events, repository) == expected


def test_each_pull_of_an_unchanged_tag_counts_once(containerd: Containerd, registry: Registry,
                                                   events: ContainerdEvents,
                                                   store: Store) -> None:
    repo = f"{registry.address}/ctd-same"
    push_busybox(registry.address, "ctd-same", "1", "2024-01-01T00:00:00Z", "same")
    ids = {containerd.pull(f"{repo}:1") for _ in range(3)}
    assert len(ids) == 1  # the image did not change between the pulls
    settle(events, repo, 3)
    assert store.seen == [repo]  # the repository, once, in the form it is stored in
    assert events.pulled_repositories() == {repo}
    status = events.status
    assert status.success and status.failures == 0 and status.alive


def test_a_pull_of_a_moved_tag_counts_once_more(containerd: Containerd, registry: Registry,
                                                events: ContainerdEvents) -> None:
    repo = f"{registry.address}/ctd-moved"
    push_busybox(registry.address, "ctd-moved", "1", "2024-01-01T00:00:00Z", "before")
    first = containerd.pull(f"{repo}:1")
    settle(events, repo, 1)
    push_busybox(registry.address, "ctd-moved", "1", "2024-01-02T00:00:00Z", "after")
    assert containerd.pull(f"{repo}:1") != first
    settle(events, repo, 2)


def test_a_pull_by_digest_counts_once(containerd: Containerd, registry: Registry,
                                      events: ContainerdEvents) -> None:
    repo = f"{registry.address}/ctd-digest"
    digest = push_busybox(registry.address, "ctd-digest", "1", "2024-01-01T00:00:00Z", "dig")
    assert containerd.pull(f"{repo}@{digest}") == config_digest(registry.address,
                                                                "ctd-digest", "1")
    settle(events, repo, 1)
    assert not [tag for tag in events.pull_times() if tag.startswith(repo)]  # no tag pulled


def test_pull_times_name_the_tag(containerd: Containerd, registry: Registry,
                                 events: ContainerdEvents) -> None:
    repo = f"{registry.address}/ctd-times"
    push_busybox(registry.address, "ctd-times", "7", "2024-01-01T00:00:00Z", "times")
    before = time.time()
    containerd.pull(f"{repo}:7")
    settle(events, repo, 1)
    assert before - 1 <= events.pull_times()[f"{repo}:7"] <= time.time()


def test_a_containerd_restart_disconnects_then_the_next_pull_counts(
        containerd: Containerd, registry: Registry, events: ContainerdEvents) -> None:
    repo = f"{registry.address}/ctd-restart"
    push_busybox(registry.address, "ctd-restart", "1", "2024-01-01T00:00:00Z", "restart")
    thread = events._thread
    containerd.kill()
    try:
        wait_for(lambda: not events.status.success and events.status.failures >= 2, 10,
                 "the stream to show disconnected and retrying")
        status = events.status
        assert "containerd does not answer" in status.error and status.alive
    finally:
        containerd.start()
    wait_for(lambda: events.status.success, 10, "the stream to reconnect")
    containerd.pull(f"{repo}:1")
    settle(events, repo, 1)
    assert events._thread is thread and thread is not None and thread.is_alive()
    assert events.status.alive


def test_a_hung_containerd_shows_disconnected_and_a_quiet_one_does_not(
        containerd: Containerd, registry: Registry, events: ContainerdEvents) -> None:
    """The socket stays open when containerd hangs: only the silence check can tell."""
    time.sleep(2.5)  # more than twice ``silence`` without an event
    assert events.status.success and events.status.failures == 0
    assert containerd.proc is not None
    os.killpg(containerd.proc.pid, signal.SIGSTOP)
    try:
        wait_for(lambda: not events.status.success, 10, "the stream to show disconnected")
        assert events.status.alive and events.status.failures >= 1
    finally:
        os.killpg(containerd.proc.pid, signal.SIGCONT)
    wait_for(lambda: events.status.success, 10, "the stream to reconnect")
    repo = f"{registry.address}/ctd-hung"
    push_busybox(registry.address, "ctd-hung", "1", "2024-01-01T00:00:00Z", "hung")
    containerd.pull(f"{repo}:1")
    settle(events, repo, 1)


def test_a_dead_socket_shows_disconnected_and_is_retried(tmp_path: Path) -> None:
    """Nothing listens: the source retries with back-off and never dies; join ends it."""
    source = ContainerdEvents(str(tmp_path / "none.sock"), silence=0.5, retry=(0.01, 0.05))
    stop = threading.Event()
    source.start(stop)
    try:
        wait_for(lambda: source.status.failures >= 3, 10, "repeated failures")
        status = source.status
        assert status.attempted and not status.success and status.alive
        assert str(tmp_path / "none.sock") in status.error
    finally:
        stop.set()
        source.join(5)
    assert source._thread is not None and not source._thread.is_alive()


# -- synthetic sequences -----------------------------------------------------------------------

MANAGED = {"io.cri-containerd.image": "managed"}
REPOS = ("127.0.0.1:5000/app", "docker.io/library/busybox", "ghcr.io/org/tool")
FAMILIAR = {"127.0.0.1:5000/app": "127.0.0.1:5000/app", "docker.io/library/busybox": "busybox",
            "ghcr.io/org/tool": "ghcr.io/org/tool"}


def sha(n: int) -> str:
    return f"sha256:{n:064x}"


class Node:
    """An image store that writes the event sequences containerd 1.6 was seen to write."""

    def __init__(self) -> None:
        self.names: set[str] = set()
        self.events: list[tuple[str, str, str, dict[str, str]]] = []  # ns, topic, name, labels

    def put(self, name: str, labels: dict[str, str], namespace: str = "k8s.io") -> None:
        exists = name in self.names and namespace == "k8s.io"
        topic = "/images/update" if exists else "/images/create"
        if namespace == "k8s.io":
            self.names.add(name)
        self.events.append((namespace, topic, name, labels))

    def cri_pull(self, repo: str, tag: str | None, image: int) -> None:
        """A CRI PullImage: of a tag, or (tag None) by digest."""
        digest = f"{repo}@{sha(image + 1000)}"
        ref = f"{repo}:{tag}" if tag else digest
        self.put(ref, MANAGED)
        self.put(sha(image), MANAGED)
        if tag:
            self.put(ref, MANAGED)
        self.put(digest, MANAGED)

    def ctr_import(self, repo: str, tag: str, image: int) -> None:
        """``ctr images import``/``pull``: CRI adds its ID record, but this is no CRI pull."""
        self.put(f"{repo}:{tag}", {})
        self.put(sha(image), MANAGED)
        self.put(f"{repo}:{tag}", MANAGED)

    def other(self, repo: str, tag: str, image: int) -> None:
        """Image events no pull makes: a tag, a delete, another namespace's pull."""
        self.put(f"{repo}:{tag}-alias", MANAGED)
        self.events.append(("k8s.io", "/images/delete", f"{repo}:{tag}", {}))
        self.names.discard(f"{repo}:{tag}")
        self.put(f"{repo}:{tag}", {}, namespace="moby")
        self.put(sha(image), {}, namespace="moby")


def envelope(namespace: str, topic: str, name: str, labels: dict[str, str], when: int) -> Any:
    out = api.Envelope(namespace=namespace, topic=topic)
    out.timestamp.FromNanoseconds(when)
    out.event.Pack(api.ImageEvent(name=name, labels=labels))
    return out


OPS = st.tuples(st.sampled_from(["pull", "pull", "digest", "import", "other"]),
                st.sampled_from(REPOS), st.sampled_from(["1", "2", "latest"]),
                st.integers(0, 3))


@settings(max_examples=1000, deadline=None)
@given(st.lists(OPS, min_size=1, max_size=25))
def test_synthetic_sequences_count_one_per_cri_pull(ops: list[tuple[str, str, str, int]]
                                                    ) -> None:
    node, expected, tags = Node(), Counter[str](), set()
    for op, repo, tag, image in ops:
        if op == "pull":
            node.cri_pull(repo, tag, image)
            expected[FAMILIAR[repo]] += 1
            tags.add(f"{FAMILIAR[repo]}:{tag}")
        elif op == "digest":
            node.cri_pull(repo, None, image)
            expected[FAMILIAR[repo]] += 1
        elif op == "import":
            node.ctr_import(repo, tag, image)
        else:
            node.other(repo, tag, image)
    source = ContainerdEvents("unix:///nonexistent.sock")  # fed directly: never connected
    counted = sum(source.handle(envelope(*e, when=n)) for n, e in enumerate(node.events))
    assert counted == sum(expected.values())
    assert dict(source.counts()) == expected
    assert set(source.pull_times()) == tags


def test_a_pull_cut_by_a_reconnect_is_not_half_counted() -> None:
    """After a reconnect the event before an ID record may be one from before the gap."""
    source = ContainerdEvents("unix:///nonexistent.sock")
    assert not source.handle(envelope("k8s.io", "/images/create", "reg.io/a:1", MANAGED, 1))
    source._connected_now(0.0, 0)  # what a (re)connect does
    assert not source.handle(envelope("k8s.io", "/images/create", sha(1), MANAGED, 2))
    assert source.counts() == []


def test_an_image_id_record_written_twice_counts_once() -> None:
    """Whatever writes the ID record again (CRI refreshing it) is no second pull."""
    source = ContainerdEvents("unix:///nonexistent.sock")
    sequence = [("/images/create", "reg.io/a:1"), ("/images/create", sha(1)),
                ("/images/update", sha(1)), ("/images/update", sha(1))]
    counted = [source.handle(envelope("k8s.io", topic, name, MANAGED, n))
               for n, (topic, name) in enumerate(sequence)]
    assert counted == [False, True, False, False]
    assert source.counts() == [("reg.io/a", 1)]
