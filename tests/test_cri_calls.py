"""What the exporter asks a node's runtime: an allow-list in front of a real containerd.

A gRPC relay on its own socket passes the calls it allows to containerd, byte for byte,
and refuses every other with PERMISSION_DENIED; it records each method it was asked. The
exporter, pointed at the relay, reads a node with a pod, checks drift and counts a pull
without one refusal, and asks nothing that writes.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.containerd import Containerd, push_busybox
from tests.services import Registry, wait_for

# Every call that only reads. The exporter needs a subset; anything else is refused.
READS = {
    "/runtime.v1.RuntimeService/Version",
    "/runtime.v1.RuntimeService/ListContainers",
    "/runtime.v1.RuntimeService/ContainerStatus",
    "/runtime.v1.RuntimeService/ListPodSandbox",
    "/runtime.v1.ImageService/ListImages",
    "/runtime.v1.ImageService/ImageStatus",
    "/runtime.v1.ImageService/ImageFsInfo",
    "/containerd.services.version.v1.Version/Version",
    "/containerd.services.events.v1.Events/Subscribe",
}
STREAMS = {"/containerd.services.events.v1.Events/Subscribe"}


class Relay(grpc.GenericRpcHandler):
    """Forwards allowed calls to ``upstream`` as raw bytes, with their metadata."""

    def __init__(self, upstream: grpc.Channel) -> None:
        self.upstream = upstream
        self.asked: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()
        self.stall: set[str] = set()  # methods held past the caller's deadline
        self._lock = threading.Lock()

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        method = details.method
        with self._lock:
            self.asked[method] += 1
        if method not in READS:
            with self._lock:
                self.refused[method] += 1

            def refuse(request: bytes, context: grpc.ServicerContext) -> bytes:
                context.abort(grpc.StatusCode.PERMISSION_DENIED, f"{method} is not a read")
                return b""
            return grpc.unary_unary_rpc_method_handler(refuse)
        if method in STREAMS:
            call = self.upstream.unary_stream(method)

            def stream(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
                answers = call(request, metadata=context.invocation_metadata())
                context.add_callback(answers.cancel)
                yield from answers
            return grpc.unary_stream_rpc_method_handler(stream)
        unary = self.upstream.unary_unary(method)

        def forward(request: bytes, context: grpc.ServicerContext) -> Any:
            if method in self.stall:
                time.sleep((context.time_remaining() or 0) + 0.2)
            try:
                return unary(request, metadata=context.invocation_metadata(),
                             timeout=context.time_remaining())
            except grpc.RpcError as exc:
                context.abort(exc.code(), exc.details() or "")
        return grpc.unary_unary_rpc_method_handler(forward)


@pytest.fixture
def relayed(tmp_path: Path, registry: Registry) -> Iterator[tuple[Containerd, Relay, str]]:
    node = Containerd(tmp_path / "node", registry.address).start()
    upstream = grpc.insecure_channel(node.endpoint)
    relay = Relay(upstream)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16), handlers=[relay])
    socket = tmp_path / "relay.sock"
    server.add_insecure_port(f"unix://{socket}")
    server.start()
    try:
        yield node, relay, f"unix://{socket}"
    finally:
        server.stop(0)
        upstream.close()
        node.stop()


def test_the_exporter_only_reads_from_the_runtime(relayed: tuple[Containerd, Relay, str],
                                                  exporter_factory) -> None:
    node, relay, endpoint = relayed
    reg = node.registry
    ref = f"{reg}/calls/app:1"
    push_busybox(reg, "calls/app", "1", "2025-01-01T00:00:00Z", "calls one")
    node.run_pod("calls", "app-0", {"app": ref})
    exp = exporter_factory("--cri.endpoint", endpoint, "--collector.engine.interval", "1s",
                           "--upstream.interval", "2s", "--upstream.insecure-registries", reg,
                           "--upstream.include", f"^{reg}/calls/")
    exp.wait_metrics(lambda m: m.get("docker_image_upstream_drift", image=ref) == 0
                     and m.get("docker_exporter_collector_success", collector="events") == 1
                     and m.select("docker_image_filesystem_used_bytes") != [],
                     what="a node read, checked upstream, events connected")
    node.pull(ref)
    exp.wait_metrics(lambda m: m.get("docker_image_pulls_total",
                                     repository=f"{reg}/calls/app") == 1, what="the pull")
    assert not relay.refused, relay.refused
    asked = set(relay.asked)
    # What it needs of the reads, and no more.
    assert asked == READS - {"/runtime.v1.RuntimeService/ListPodSandbox"}, asked
    # A container's image name is asked once, however often the containers are listed.
    wait_for(lambda: relay.asked["/runtime.v1.RuntimeService/ListContainers"] >= 3, 15,
             "three reads")
    assert relay.asked["/runtime.v1.RuntimeService/ContainerStatus"] == 1
    # The relay does refuse a write (so a refusal above would have been seen).
    from tests.containerd import cri, cri_grpc
    with grpc.insecure_channel(endpoint) as channel, pytest.raises(grpc.RpcError) as refused:
        cri_grpc.ImageServiceStub(channel).RemoveImage(
            cri.RemoveImageRequest(image=cri.ImageSpec(image=ref)), timeout=10)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert relay.refused == {"/runtime.v1.ImageService/RemoveImage": 1}
    assert node.image_id(ref)  # still there


def test_a_runtime_that_stalls_costs_one_deadline_a_read(
        relayed: tuple[Containerd, Relay, str]) -> None:
    """ImageStatus stalls (a busy runtime): a read of many new images waits for one
    deadline, not one per image, keeps what it could read, and fills in the build times
    once the runtime answers again."""
    from exporter.sources.cri import Cri, CriReader

    node, relay, endpoint = relayed
    for n in range(6):
        push_busybox(node.registry, "stall/app", str(n), f"2025-01-0{n + 1}T00:00:00Z", str(n))
        node.pull(f"{node.registry}/stall/app:{n}")
    relay.stall.add("/runtime.v1.ImageService/ImageStatus")
    api = Cri(endpoint, timeout=0.5)
    try:
        reader = CriReader(api)
        started = time.monotonic()
        first = reader.read()
        assert time.monotonic() - started < 1.5  # one deadline, not six
        assert relay.asked["/runtime.v1.ImageService/ImageStatus"] == 1
        assert len(first.images) == 6 and all(i.created == 0 for i in first.images)
        relay.stall.clear()
        again = reader.read()
        assert again is not first  # a read with failures is not kept
        assert sorted(i.created for i in again.images) == [
            1735689600.0 + n * 86400 for n in range(6)]
        assert reader.read() is again
    finally:
        api.close()
