"""A Kubernetes node: the exporter pointed at a real containerd through CRI (--cri.endpoint),
with real host-network pods run the way the kubelet runs them, images in a real registry.

What a containerd node must show, end to end: its pods' containers with namespace and pod,
a pod on a re-pulled tag stale, an upstream push as drift, image ages, the image
filesystem as ImageFsInfo says it, and pulls counted one per pull.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from exporter.timestamps import parse_timestamp
from tests.containerd import HOST_ARCH, Containerd, config_digest, cri, push_busybox
from tests.registries import put_cosign_signature, put_index
from tests.services import Metrics, Registry

FAST = ("--upstream.interval", "2s", "--collector.engine.interval", "1s")


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, registry: Registry) -> Iterator[Containerd]:
    daemon = Containerd(Path(tmp_path_factory.mktemp("containerd", numbered=True)),
                        registry.address)
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.stop()


def _args(node: Containerd, *more: str, versions: bool = False) -> tuple[str, ...]:
    return ("--cri.endpoint", node.endpoint, *FAST, "--upstream.insecure-registries",
            node.registry, "--upstream.include", f"^{node.registry}/node/",
            "--versions.enabled", str(versions).lower(), *more)


def _container(m: Metrics, name: str, **labels: str) -> dict[str, str]:
    found = m.select("docker_container_info", container=name, **labels)
    assert len(found) == 1, found
    return found[0][0]


def test_a_pod_on_a_re_pulled_tag_is_stale_with_its_namespace_and_pod(
        node: Containerd, exporter_factory) -> None:
    reg = node.registry
    web, api = f"{reg}/node/web:1", f"{reg}/node/api:1"
    push_busybox(reg, "node/web", "1", "2025-01-01T00:00:00Z", "web one")
    push_busybox(reg, "node/api", "1", "2025-03-01T12:00:00Z", "api one")
    shop = node.run_pod("shop", "web-0", {"web": web, "sidecar": api})
    other = node.run_pod("billing", "web-0", {"web": api})  # same pod and container names
    try:
        exp = exporter_factory(*_args(node))
        m = exp.wait_metrics(lambda m: m.get("docker_container_image_stale", container="web",
                                             namespace="shop", pod="web-0") == 0
                             and m.get("docker_image_upstream_drift", image=web) == 0,
                             what="the shop pod's web container, checked upstream")
        info = _container(m, "web", namespace="shop", pod="web-0")
        assert info["image"] == web and info["state"] == "running"
        assert info["image_id"] == config_digest(reg, "node/web", "1")
        doc = httpx.get(f"{exp.url}/status.json", timeout=10).json()
        assert (doc["engine"], doc["engine_api"]) == ("containerd", "v1")
        assert doc["docker_host"] == node.endpoint
        assert {"shop/web-0/web", "billing/web-0/web", "shop/web-0/sidecar"} <= \
            {c["name"] for c in doc["containers"]}
        assert "Kubernetes node, CRI endpoint" in httpx.get(f"{exp.url}/", timeout=10).text
        assert _container(m, "web", namespace="billing", pod="web-0")["image"] == api
        assert _container(m, "sidecar", namespace="shop", pod="web-0")["image"] == api
        engine = m.select("docker_engine_info")
        assert [(lb["engine"], lb["api_version"]) for lb, _ in engine] == [("containerd", "v1")]
        assert engine[0][0]["version"].startswith("1.6")
        # Image ages: the build time in the image's config.
        assert m.get("docker_image_created_timestamp_seconds",
                     id=config_digest(reg, "node/api", "1")) == \
            parse_timestamp("2025-03-01T12:00:00Z")

        # The tag moves on and the node pulls it again (a new pod, imagePullPolicy Always):
        # the running container still runs the old image, so it is stale, named by its pod.
        push_busybox(reg, "node/web", "1", "2025-02-01T00:00:00Z", "web two")
        node.pull(web)
        m = exp.wait_metrics(lambda m: m.get("docker_container_image_stale", container="web",
                                             namespace="shop", pod="web-0") == 1,
                             what="the shop pod's web container stale")
        assert m.get("docker_container_image_stale", container="web", namespace="billing",
                     pod="web-0") == 0
        attention = httpx.get(f"{exp.url}/", timeout=10).text.split('id="containers"')[1]
        assert "shop/web-0/web" in attention.split("</section>")[0]
        # Once checked again: the tag is current, and the container runs what it replaced.
        m = exp.wait_metrics(lambda m: m.get("docker_container_upstream_drift", container="web",
                                             namespace="shop", pod="web-0", image=web) == 1,
                             what="the stale container drifted from its tag")
        assert m.get("docker_image_upstream_drift", image=web) == 0

        # Pushed upstream, not pulled: the tag drifted, and so do its containers.
        push_busybox(reg, "node/api", "1", "2025-04-01T00:00:00Z", "api two")
        m = exp.wait_metrics(lambda m: m.get("docker_image_upstream_drift", image=api) == 1,
                             what=f"{api} drifted")
        for namespace, name in (("shop", "sidecar"), ("billing", "web")):
            assert m.get("docker_container_upstream_drift", container=name, image=api,
                         namespace=namespace, pod="web-0") == 1
            assert m.get("docker_container_image_stale", container=name,
                         namespace=namespace, pod="web-0") == 0
    finally:
        node.remove_pod(shop)
        node.remove_pod(other)


def test_the_image_filesystem_is_what_image_fs_info_says(node: Containerd,
                                                         exporter_factory) -> None:
    reg = node.registry
    push_busybox(reg, "node/unused", "7", "2024-06-01T00:00:00Z", "unused")
    node.pull(f"{reg}/node/unused:7")
    pod = node.run_pod("disk", "user-0", {"app": f"{reg}/node/web:1"})
    try:
        exp = exporter_factory(*_args(node))
        # containerd refreshes ImageFsInfo once a second here: wait for a figure that no
        # longer moves, then compare the exporter's with containerd's own.
        def settled(m: Metrics) -> bool:
            found = m.select("docker_image_filesystem_used_bytes")
            return len(found) == 1 and found[0][1] > 0 and found[0][1] == node.image_fs_used()
        m = exp.wait_metrics(settled, what="the image filesystem's used bytes")
        (labels, used), = m.select("docker_image_filesystem_used_bytes")
        fs = node.images.ImageFsInfo(cri.ImageFsInfoRequest()).image_filesystems[0]
        assert labels["mountpoint"] == fs.fs_id.mountpoint
        assert used == fs.used_bytes.value
        assert m.get("docker_image_filesystem_inodes_used",
                     mountpoint=fs.fs_id.mountpoint) == fs.inodes_used.value
        capacity = m.get("docker_image_filesystem_capacity_bytes",
                         mountpoint=fs.fs_id.mountpoint)
        assert capacity is not None and capacity > used
        # What the kubelet's image GC could delete: every image no container runs (the
        # unused one, the pause image, the web images other pods ran), at CRI's sizes.
        images = node.images.ListImages(cri.ListImagesRequest()).images
        running = {c.image_ref for c in node.runtime.ListContainers(
            cri.ListContainersRequest()).containers}
        expected = sum(i.size for i in images if i.id not in running)
        unused = node.image_id(f"{reg}/node/unused:7")
        assert unused not in running and expected >= next(i.size for i in images
                                                          if i.id == unused)
        m = exp.wait_metrics(lambda m: m.get("docker_image_filesystem_reclaimable_bytes")
                             == expected, what="reclaimable bytes")
        # Not docker system df: no such rows on a node.
        assert not m.select("docker_disk_usage_bytes")
    finally:
        node.remove_pod(pod)


def test_a_dead_runtime_shows_as_down_and_recovers(node: Containerd, exporter_factory,
                                                   tmp_path: Path) -> None:
    """The socket goes away: docker_up 0 and the engine collector failing, the last
    snapshot kept; back, and it reads again. No loop dies."""
    exp = exporter_factory(*_args(node))
    exp.wait_metrics(lambda m: m.get("docker_up") == 1, what="up")
    node.stop_daemon()
    m = exp.wait_metrics(lambda m: m.get("docker_up") == 0, what="down")
    assert m.get("docker_exporter_collector_alive", collector="engine") == 1
    assert (m.get("docker_exporter_collector_failures_total", collector="engine") or 0) > 0
    assert m.select("docker_image_info")  # the last good snapshot stays
    node.start_daemon()
    started = time.time()
    exp.wait_metrics(lambda m: m.get("docker_up") == 1, timeout=60, what="up again")
    assert time.time() - started < 60


def test_newer_versions_and_signatures_for_a_pods_tag(node: Containerd, exporter_factory
                                                      ) -> None:
    """Both ask the registry, not the runtime: a pod on 1.2.0 while 1.3.0 is out, and the
    digest its tag serves signed (cosign's .sig tag)."""
    reg = node.registry
    for version, created in (("1.2.0", "2025-05-01T00:00:00Z"),
                             ("1.3.0", "2025-06-01T00:00:00Z")):
        push_busybox(reg, "node/versioned", version, created, version)
    one = f"{reg}/node/versioned:1.2.0"
    signed = push_busybox(reg, "node/versioned", "1.2.0", "2025-05-01T00:00:00Z", "1.2.0")
    put_cosign_signature(reg, "node/versioned", signed)
    pod = node.run_pod("apps", "versioned-0", {"app": one})
    try:
        exp = exporter_factory(*_args(node, "--versions.pin", "none", versions=True))
        m = exp.wait_metrics(lambda m: m.get("docker_image_versions_behind", image=one) == 1
                             and m.get("docker_image_upstream_signed", image=one) is not None,
                             what="a newer version and the signature")
        (labels, _), = m.select("docker_image_newer_version_info", image=one)
        assert labels["latest"] == "1.3.0"
        assert m.get("docker_container_newer_version_available", container="app",
                     namespace="apps", pod="versioned-0", image=one) == 1
        assert m.get("docker_image_upstream_signed", image=one) == 1
    finally:
        node.remove_pod(pod)


def test_a_runtime_that_never_answers_costs_one_deadline(tmp_path: Path) -> None:
    """A socket that accepts and then says nothing (a hung runtime): every call ends at its
    deadline with the endpoint named, many times over, and nothing is left open."""
    import os
    import socket
    import threading

    from exporter.sources.cri import Cri, CriReader
    from exporter.sources.loop import SourceError

    path = tmp_path / "hung.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    threading.Thread(target=accept, daemon=True).start()
    api = Cri(f"unix://{path}", timeout=0.2)
    reader = CriReader(api)
    def open_here() -> int:  # this process's descriptors, not the fake runtime's
        return len(os.listdir("/proc/self/fd")) - len(held)

    fds = 0
    try:
        for n in range(25):
            if n == 1:  # after gRPC's own (poller, wakeup) came to be
                fds = open_here()
            started = time.monotonic()
            with pytest.raises(SourceError) as failed:
                reader.read()
            assert time.monotonic() - started < 1.5
            assert str(path) in failed.value.cause
        api.close()
        assert open_here() <= fds
    finally:
        stop.set()
        api.close()
        for conn in held:
            conn.close()
        server.close()


def test_an_unchanged_node_gives_the_same_snapshot_and_asks_each_image_once(
        node: Containerd) -> None:
    """Build times and container references are asked once per ID; a read that finds
    everything as before gives the last snapshot itself (nothing re-rendered)."""
    from exporter.sources.cri import Cri, CriReader

    class Counting(Cri):
        def __init__(self, endpoint: str, timeout: float) -> None:
            super().__init__(endpoint, timeout)
            self.asked: list[str] = []

        def image_created(self, image_id: str) -> float | None:
            self.asked.append(image_id)
            return super().image_created(image_id)

        def container_image_name(self, container_id: str) -> str:
            self.asked.append(container_id)
            return super().container_image_name(container_id)

    push_busybox(node.registry, "node/quiet", "1", "2025-01-01T00:00:00Z", "quiet")
    pod = node.run_pod("quiet", "q-0", {"q": f"{node.registry}/node/quiet:1"})
    api = Counting(node.endpoint, 10.0)
    try:
        reader = CriReader(api)
        first = reader.read()
        asked = len(api.asked)
        assert asked == len(first.images) + len(first.containers)
        assert reader.read() is first and len(api.asked) == asked
        node.pull(f"{node.registry}/node/quiet:1")  # the same content again
        again = reader.read()
        assert again == first
        assert len(api.asked) == asked  # nothing new to ask
    finally:
        api.close()
        node.remove_pod(pod)


def test_three_pulls_count_three(node: Containerd, exporter_factory) -> None:
    """One per CRI pull, whether or not the image changed, under the pod's repository; the
    pull's time becomes the image's last-tagged time."""
    reg = node.registry
    ref = f"{reg}/node/pulled:1"
    push_busybox(reg, "node/pulled", "1", "2025-01-01T00:00:00Z", "pulled one")
    exp = exporter_factory(*_args(node))
    exp.wait_metrics(lambda m: m.get("docker_exporter_collector_success",
                                     collector="events") == 1, what="the event stream")
    node.pull(ref)
    node.pull(ref)  # unchanged
    push_busybox(reg, "node/pulled", "1", "2025-02-01T00:00:00Z", "pulled two")
    pulled = time.time()
    node.pull(ref)  # moved
    m = exp.wait_metrics(lambda m: m.get("docker_image_pulls_total",
                                         repository=f"{reg}/node/pulled") == 3,
                         what="three pulls")
    assert m.get("docker_image_pulls_total", repository=f"{reg}/node/pulled") == 3
    image = node.image_id(ref)
    m = exp.wait_metrics(lambda m: m.get("docker_image_last_tagged_timestamp_seconds",
                                         id=image) is not None, what="the pull's time")
    assert m.get("docker_image_last_tagged_timestamp_seconds", id=image) == \
        pytest.approx(pulled, abs=2)


def test_a_docker_host_does_not_load_grpc() -> None:
    """gRPC is 20 MB of memory at import: only a CRI node pays for it."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", "import sys, exporter.cli, exporter.app; "
                           "from exporter.app import Exporter; from exporter import config; "
                           "Exporter(config.build({'state.path': ':memory:'}, environ={}))"
                           ".stop(); print(sorted(m for m in sys.modules if 'grpc' in m))"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_another_platform_rebuilt_is_no_drift_and_no_stale_pod(node: Containerd,
                                                                 exporter_factory) -> None:
    """The multi-arch false positive other tools report: the tag's index moved because
    another platform was rebuilt. This node's image is the same, so the tag is
    platform_unchanged, its pod neither drifted nor stale, before and after the node pulls
    the new index."""
    reg = node.registry
    other = "arm64" if HOST_ARCH != "arm64" else "amd64"
    ref = f"{reg}/node/multi:1"
    push_busybox(reg, "node/multi", "own-1", "2025-01-01T00:00:00Z", "own one")
    push_busybox(reg, "node/multi", "other-1", "2025-01-01T00:00:00Z", "other one", other)
    put_index(reg, "node/multi", "1", [("own-1", HOST_ARCH), ("other-1", other)])
    pod = node.run_pod("multi", "m-0", {"app": ref})
    try:
        running = node.image_id(ref)
        assert running == config_digest(reg, "node/multi", "own-1")
        exp = exporter_factory(*_args(node))
        exp.wait_metrics(lambda m: m.get("docker_image_upstream_drift", image=ref) == 0,
                         what="the tag current")
        push_busybox(reg, "node/multi", "other-2", "2025-02-01T00:00:00Z", "other two", other)
        put_index(reg, "node/multi", "1", [("own-1", HOST_ARCH), ("other-2", other)])

        def unchanged(m: Metrics) -> bool:
            return m.get("docker_image_upstream_status", image=ref,
                         status="platform_unchanged", reason="") == 1
        m = exp.wait_metrics(unchanged, what="platform_unchanged")
        assert m.get("docker_image_upstream_drift", image=ref) == 0
        assert m.get("docker_container_upstream_drift", container="app", image=ref,
                     namespace="multi", pod="m-0") == 0
        node.pull(ref)  # the node takes the new index: the same image for its platform
        pulled = time.time()
        assert node.image_id(ref) == running
        m = exp.wait_metrics(lambda m: (m.get("docker_image_upstream_last_check_timestamp_"
                                              "seconds", image=ref) or 0) > pulled + 1,
                             what="a check after the pull")
        assert m.get("docker_container_image_stale", container="app", namespace="multi",
                     pod="m-0") == 0
        assert m.get("docker_image_upstream_drift", image=ref) == 0
        assert m.get("docker_container_upstream_drift", container="app", image=ref,
                     namespace="multi", pod="m-0") == 0
    finally:
        node.remove_pod(pod)


def test_two_thousand_failed_reads_leak_nothing(tmp_path: Path) -> None:
    """A node whose runtime is gone for a long time: every read fails fast with the socket
    named, and neither descriptors nor threads pile up."""
    import os
    import threading

    from exporter.sources.cri import Cri, CriDiskReader, CriReader
    from exporter.sources.loop import SourceError

    api = Cri(f"unix://{tmp_path / 'gone.sock'}", timeout=1.0)
    reader, disk = CriReader(api), CriDiskReader(api)
    try:
        for n in range(2000):
            if n == 10:
                fds, threads = len(os.listdir("/proc/self/fd")), threading.active_count()
            with pytest.raises(SourceError) as failed:
                (reader if n % 2 else disk).read()
            assert "gone.sock" in failed.value.cause
        assert len(os.listdir("/proc/self/fd")) <= fds
        assert threading.active_count() <= threads
    finally:
        api.close()
