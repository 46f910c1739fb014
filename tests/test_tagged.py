"""When a tag was first seen naming its image: the bookkeeping behind
docker_image_last_tagged_timestamp_seconds where the engine records no LastTagTime."""

from __future__ import annotations

from pathlib import Path

from exporter.decisions.tagged import TagSeen, last_tagged, tags_seen
from exporter.sources.events import EventStream, tag_of
from exporter.state import StateStore

A, B = "sha256:" + "a" * 64, "sha256:" + "b" * 64


def test_new_tag_same_id_new_id_and_gone() -> None:
    seen = tags_seen({}, {"app:1": A, "app:latest": A}, 100.0, 90.0, {})
    assert seen == {"app:1": TagSeen(A, 100.0, 90.0), "app:latest": TagSeen(A, 100.0, 90.0)}
    # The same ID keeps its time, read after read.
    later = tags_seen(seen, {"app:1": A, "app:latest": A}, 200.0, 190.0, {})
    assert later == seen
    # app:latest now names another image: seen anew; app:1 keeps its time.
    moved = tags_seen(later, {"app:1": A, "app:latest": B}, 300.0, 290.0, {})
    assert moved == {"app:1": TagSeen(A, 100.0, 90.0), "app:latest": TagSeen(B, 300.0, 290.0)}
    assert last_tagged(moved) == {A: 100.0, B: 300.0}
    # A tag no longer present is forgotten; so is an image that has no tag left.
    gone = tags_seen(moved, {"app:latest": B}, 400.0, 390.0, {})
    assert gone == {"app:latest": TagSeen(B, 300.0, 290.0)}
    assert last_tagged(gone) == {B: 300.0}
    # Back under its old tag: a new first sight, not the forgotten one.
    back = tags_seen(gone, {"app:1": A, "app:latest": B}, 500.0, 490.0, {})
    assert back["app:1"] == TagSeen(A, 500.0, 490.0)


def test_an_image_takes_the_latest_first_sight_among_its_tags() -> None:
    seen = tags_seen({"app:1": TagSeen(A, 100.0, 0.0)}, {"app:1": A, "app:stable": A},
                     300.0, 290.0, {})
    assert last_tagged(seen) == {A: 300.0}


def test_a_pull_event_in_the_window_gives_the_exact_time() -> None:
    # Pulled at 295, between the read before (290) and this one's answer (300).
    seen = tags_seen({"app:1": TagSeen(A, 100.0, 0.0)}, {"app:1": B}, 300.0, 290.0,
                     {"app:1": 295.0})
    assert seen["app:1"] == TagSeen(B, 295.0, 290.0)
    # The event arrived a read late: the next read corrects the time.
    late = tags_seen({"app:1": TagSeen(A, 100.0, 0.0)}, {"app:1": B}, 300.0, 290.0, {})
    assert late["app:1"].seen == 300.0
    assert tags_seen(late, {"app:1": B}, 310.0, 300.0, {"app:1": 295.0})["app:1"] == \
        TagSeen(B, 295.0, 290.0)
    # A pull before the window was of what the tag named before; one after it, of the same
    # image again: neither moves the time.
    assert tags_seen({"app:1": TagSeen(A, 100.0, 0.0)}, {"app:1": B}, 300.0, 290.0,
                     {"app:1": 280.0})["app:1"].seen == 300.0
    assert tags_seen(late, {"app:1": B}, 410.0, 400.0, {"app:1": 405.0})["app:1"] == late["app:1"]


def test_the_state_store_keeps_them_across_restarts(tmp_path: Path) -> None:
    path = str(tmp_path / "state.db")
    store = StateStore(path)
    store.keep_tags_seen({"app:1": TagSeen(A, 100.0, 90.0), "app:2": TagSeen(B, 200.0, 0.0)})
    store.keep_tags_seen({"app:1": TagSeen(A, 100.0, 90.0)})  # app:2 is gone
    store.close()
    reopened = StateStore(path)
    try:
        assert reopened.persistent
        assert reopened.tags_seen() == {"app:1": TagSeen(A, 100.0, 90.0)}
    finally:
        reopened.close()


def test_pull_events_name_their_tag_in_either_engines_shape() -> None:
    def pull(actor_id: str, name: str, nano: int = 1_795_838_000_000_000_000) -> dict:
        return {"Type": "image", "Action": "pull", "timeNano": nano,
                "Actor": {"ID": actor_id, "Attributes": {"name": name}}}

    docker = pull("127.0.0.1:5000/team/app:1", "127.0.0.1:5000/team/app")
    podman = pull("f" * 64, "docker.io/library/busybox:1.36")
    assert tag_of(docker) == "127.0.0.1:5000/team/app:1"
    assert tag_of(podman) == "busybox:1.36"
    assert tag_of(pull("busybox@sha256:" + "a" * 64, "busybox")) is None  # by digest
    assert tag_of(pull("busybox", "busybox")) is None  # every tag (pull -a)
    stream = EventStream("unix:///nonexistent")
    for event in (docker, podman, pull("127.0.0.1:5000/team/app:1", "127.0.0.1:5000/team/app",
                                       1_795_838_001_500_000_000)):
        stream.handle(event)
    assert stream.pull_times() == {"127.0.0.1:5000/team/app:1": 1_795_838_001.5,
                                   "busybox:1.36": 1_795_838_000.0}
