"""Registry requests: CPU per HEAD, round trips of a moved tag, a 1,000-tag cycle (issue 15).

    .venv/bin/python bench/registry_cost.py              # about 2 minutes on 2 cores
    .venv/bin/python bench/registry_cost.py --quick      # fewer repeats, ~40 s
    .venv/bin/python bench/registry_cost.py --baseline 8020543 --tags 1000

Every figure is printed beside the same figure of a baseline commit, measured in the same
run: the baseline is checked out with ``git worktree add --detach`` into a temporary
directory (removed at the end). Both run this same file as a worker subprocess
(``--worker SPEC``, printing JSON), with ``PYTHONPATH`` at their checkout, one after the
other and alternating which goes first, so neither shares a process, a cache or the
interpreter lock with the other, nor with the harness.

1. CPU per registry HEAD: a real CNCF Distribution with bearer-token auth (our token server),
   16 threads sending ``head_digest`` over every tag a few times with ``fresh_for=0`` (each
   call a real HEAD); ``time.process_time()`` of the worker around the loop, per HEAD.
2. A moved multi-arch tag behind 50 ms of added latency: requests and sequential round
   trips for one ``DriftCheck`` to decide it (wall time / 50 ms).
3. A cycle of 1,000 tags at 20 ms: the upstream loop's scheduler (``Checks.cycle()``, as
   ``report --check`` runs it) with ``DriftCheck``, against the bound N·L/c and the floor
   measured through the proxy (one HEAD's wall time · N / c). L is set by ``calibrate()``
   (one HEAD alone takes 20 ms from a raw socket); the same cycle with 20 ms added on top
   of what the registry takes is measured beside it.

The latency is added by a small asyncio proxy run in a process of its own (``--proxy``),
which counts the requests and reports its own CPU. Only ``build()`` knows how the exporter's
registry side is put together: adapt it there when the API moves.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import selectors
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_BASELINE = "8020543"
USER, PASSWORD = "bench", "bench-pass"
REPOS = 20
THREADS = 16
PASSES = 2  # over the tags of the CPU figure
CPU_TAGS = 250
MOVED_LATENCY, CYCLE_LATENCY = 0.05, 0.02
CPU_TARGET_MS, CYCLE_TARGET = 0.5, 1.2
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
CONFIG_TYPE = "application/vnd.docker.container.image.v1+json"
LAYER_TYPE = "application/vnd.docker.image.rootfs.diff.tar.gzip"


# -- the exporter's registry side, as make_source() builds it ----------------------------------


def build(registry: str, state_path: str, fresh_for: float) -> SimpleNamespace:
    """The request policy, client, content cache, DriftCheck and the loop's scheduler, built
    from the default Config as ``exporter.sources.upstream.make_source`` builds them (no
    engine: the platform is given, and loopback registries are plain HTTP). The one place
    that knows the exporter's API."""
    from exporter import reference
    from exporter.config import Config
    from exporter.registry.client import RegistryClient
    from exporter.registry.content import ContentCache
    from exporter.registry.credentials import Credentials, CredentialStore
    from exporter.sources import upstream
    from exporter.state import StateStore

    config = Config()
    policy = upstream.request_policy(config)
    facts = upstream.EngineFacts(None, config.upstream_interval, (registry,), "linux/amd64")
    if hasattr(facts, "store_override"):  # the host's store kind (not at the baseline)
        facts.store_override = "classic"
    creds = CredentialStore({registry: Credentials(USER, PASSWORD)},
                            str(Path(state_path).with_suffix(".docker.json")))
    client = RegistryClient(creds, facts.insecure, policy, fresh_for=fresh_for)
    store = StateStore(state_path)
    content = ContentCache(client, store)
    check = upstream.DriftCheck(client, content, facts, config.versions_interval)

    def target(ref: str, image_id: str, digests: list[str]) -> Any:
        parsed = reference.parse(ref)
        return upstream.Target(parsed.familiar(), parsed, image_id, frozenset(digests))

    def checks(targets: list[Any]) -> Any:
        """A new scheduler (every tag due) around the same client and DriftCheck."""
        return upstream.Checks(lambda: targets, check, upstream.local_record(store),
                               client.counters, config.upstream_interval,
                               config.upstream_concurrency,
                               config.upstream_registry_concurrency,
                               forget=store.forget_upstream,
                               # a cycle's verdicts in one commit (not at the baseline)
                               **({"flush": store.flush} if hasattr(store, "flush") else {}))

    def close() -> None:
        client.close()
        store.close()

    return SimpleNamespace(client=client, check=check, target=target, checks=checks,
                           close=close, per_registry=config.upstream_registry_concurrency)


# -- the worker: runs in a subprocess with PYTHONPATH at the checkout measured -----------------


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) of another process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def control(proxy: str, what: str) -> dict[str, Any]:
    import httpx

    return httpx.get(f"http://{proxy}/__bench/{what}", timeout=10).json()


def cpu_per_head(spec: dict[str, Any], tmp: Path) -> dict[str, Any]:
    x = build(spec["registry"], str(tmp / "cpu.db"), fresh_for=0.0)
    tags = [tuple(t) for t in spec["cpu_tags"]]
    passes = spec["passes"]
    try:
        def run(share: list[tuple[str, str]], rounds: int) -> None:
            for _ in range(rounds):
                for repo, tag in share:
                    x.client.head_digest(spec["registry"], repo, tag)

        def threads(rounds: int) -> None:
            workers = [threading.Thread(target=run, args=(tags[i::THREADS], rounds))
                       for i in range(THREADS)]
            for w in workers:
                w.start()
            for w in workers:
                w.join()

        threads(1)  # first contact, a token per repository, connections opened
        registry = process_cpu(spec["registry_pid"])
        wall, cpu = time.perf_counter(), time.process_time()
        threads(passes)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        registry = process_cpu(spec["registry_pid"]) - registry
    finally:
        x.close()
    heads = len(tags) * passes
    return {"heads": heads, "cpu_ms_per_head": cpu * 1000 / heads, "wall_s": wall,
            "heads_per_s": heads / wall, "registry_ms_per_head": registry * 1000 / heads}


def moved_tag(spec: dict[str, Any], tmp: Path) -> dict[str, Any]:
    proxy, m = spec["proxy"], spec["moved"]
    control(proxy, f"delay/{MOVED_LATENCY}")
    x = build(proxy, str(tmp / "moved.db"), fresh_for=0.0)
    try:
        # The registry was contacted before (GET /v2/, the token for the repository): what
        # is measured is deciding the tag, as in every cycle after the first.
        x.client.head_digest(proxy, m["repo"], m["warm_tag"])
        t = x.target(f"{proxy}/{m['repo']}:{m['tag']}", m["image_id"], [m["old_index"]])
        before = control(proxy, "stats")
        wall = time.perf_counter()
        outcome = x.check(t)
        wall = time.perf_counter() - wall
        after = control(proxy, f"log/{before['requests']}")
    finally:
        x.close()
    return {"status": outcome.status, "wall_s": wall, "round_trips": wall / MOVED_LATENCY,
            "requests": after["requests"] - before["requests"], "log": after["log"]}


def cycle(spec: dict[str, Any], tmp: Path) -> dict[str, Any]:
    proxy = spec["proxy"]
    x = build(proxy, str(tmp / "cycle.db"), fresh_for=0.0)
    out: dict[str, Any] = {"per_registry": x.per_registry}
    try:
        targets = [x.target(f"{proxy}/{repo}:{tag}", image_id, [digest])
                   for repo, tag, digest, image_id in spec["cycle_tags"]]

        def timed(label: str, run: Any) -> None:
            before = control(proxy, "stats")
            registry, cpu = process_cpu(spec["registry_pid"]), time.process_time()
            wall = time.perf_counter()
            result = run()
            wall = time.perf_counter() - wall
            cpu, registry = time.process_time() - cpu, process_cpu(spec["registry_pid"]) - registry
            after = control(proxy, "stats")
            out[label] = {"wall_s": wall, "requests": after["requests"] - before["requests"],
                          "heads": after["heads"] - before["heads"],
                          "proxy_cpu_s": after["cpu_s"] - before["cpu_s"],
                          "cpu_s": cpu, "registry_cpu_s": registry}
            if result is not None:
                states = Counter(s.status for s in result.states)
                out[label]["states"] = dict(states)

        # The first cycle, not counted: first contact, a token per repository, and each
        # image's signature looked for once (referrers, tag schema, `.sig`). Each timed cycle
        # is a new scheduler round the same client and DriftCheck, so every tag is due and
        # costs one HEAD, as in every cycle after the first: once with the delay that makes
        # one HEAD alone take CYCLE_LATENCY, once with CYCLE_LATENCY added on top of what
        # the registry takes.
        control(proxy, f"delay/{spec['calibrated_delay']}")
        timed("first", lambda: x.checks(targets).cycle())
        for label, delay in (("next", spec["calibrated_delay"]), ("added", CYCLE_LATENCY)):
            control(proxy, f"delay/{delay}")
            timed(label, lambda: x.checks(targets).cycle())
            one = []
            for repo, tag, _, _ in spec["cycle_tags"][:25]:
                started = time.perf_counter()
                x.client.head_digest(proxy, repo, tag)
                one.append(time.perf_counter() - started)
            out[label]["one_head_s"] = statistics.median(one)
    finally:
        x.close()
    return out


def worker(spec: dict[str, Any]) -> None:
    import exporter

    where = Path(exporter.__file__).resolve().parent.parent
    if where != Path(spec["checkout"]).resolve():
        raise SystemExit(f"imported exporter from {where}, not {spec['checkout']}")
    with tempfile.TemporaryDirectory(prefix="bench-regcost-w-") as tmp:
        result = {"exporter": str(where),
                  "cpu": cpu_per_head(spec, Path(tmp)),
                  "moved": moved_tag(spec, Path(tmp)),
                  "cycle": cycle(spec, Path(tmp))}
    print(json.dumps(result))


# -- the latency proxy: a process of its own ---------------------------------------------------


class Proxy:
    """Forwards HTTP/1.1 to one upstream port, each request ``delay`` after it arrived, and
    the answers back as they come (not parsed: a client sends its next request on a
    connection only after the last answer). Counts requests; answers ``/__bench/...`` itself.
    Plain asyncio protocols, so that it costs little CPU per request."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.delay = 0.0
        self.requests = 0
        self.heads = 0
        self.log: list[str] = []

    def control(self, path: str) -> bytes:
        if path.startswith("/__bench/delay/"):
            self.delay = float(path.rsplit("/", 1)[1])
        since = int(path.rsplit("/", 1)[1]) if path.startswith("/__bench/log/") else None
        body = json.dumps({"requests": self.requests, "heads": self.heads,
                           "cpu_s": time.process_time(), "delay": self.delay,
                           "log": [] if since is None else self.log[since:]}).encode()
        return (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                + str(len(body)).encode() + b"\r\n\r\n" + body)

    async def main(self, port_file: Path) -> None:
        loop = asyncio.get_running_loop()
        proxy = self

        class Upstream(asyncio.Protocol):
            def __init__(self, down: asyncio.Transport) -> None:
                self.down = down

            def data_received(self, data: bytes) -> None:
                self.down.write(data)

            def connection_lost(self, exc: Exception | None) -> None:
                self.down.close()

        class Downstream(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                self.transport = transport
                self.buffer = b""
                self.up: asyncio.Transport | None = None
                self.waiting: list[bytes] = []
                self.connecting = loop.create_task(self.connect())

            async def connect(self) -> None:
                try:
                    up, _ = await loop.create_connection(lambda: Upstream(self.transport),
                                                         "127.0.0.1", proxy.upstream_port)
                except OSError:
                    self.transport.close()
                    return
                self.up = up
                for data in self.waiting:
                    up.write(data)
                self.waiting = []

            def forward(self, data: bytes) -> None:
                if self.up is None:
                    self.waiting.append(data)
                elif not self.up.is_closing():
                    self.up.write(data)

            def data_received(self, data: bytes) -> None:
                self.buffer += data
                if self.buffer[:1] and not self.buffer[:1].isalpha():
                    # A TLS hello: plain HTTP only here, which a client learns as from a
                    # registry that speaks only HTTP.
                    self.transport.write(b"HTTP/1.0 400 Bad Request\r\n\r\n")
                    self.transport.close()
                    return
                while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
                    head = self.buffer[:end + 4]
                    lower = head.lower()
                    at = lower.find(b"\r\ncontent-length:")
                    length = int(lower[at + 17:lower.index(b"\r\n", at + 2)]) if at >= 0 else 0
                    if len(self.buffer) < end + 4 + length:
                        return
                    request = self.buffer[:end + 4 + length]
                    self.buffer = self.buffer[end + 4 + length:]
                    method, path = head.split(b" ", 2)[:2]
                    if path.startswith(b"/__bench/"):
                        self.transport.write(proxy.control(path.decode()))
                        continue
                    proxy.requests += 1
                    proxy.heads += method == b"HEAD"
                    proxy.log.append(f"{method.decode()} {path.decode().split('?')[0]}")
                    if proxy.delay:
                        loop.call_later(proxy.delay, self.forward, request)
                    else:
                        self.forward(request)

            def connection_lost(self, exc: Exception | None) -> None:
                if self.up is not None:
                    self.up.close()

        server = await loop.create_server(Downstream, "127.0.0.1", 0, backlog=256)
        port = server.sockets[0].getsockname()[1]
        port_file.with_suffix(".tmp").write_text(str(port))
        port_file.with_suffix(".tmp").rename(port_file)
        async with server:
            await server.serve_forever()


def start_proxy(upstream_port: int, tmp: Path) -> tuple[subprocess.Popen, str]:
    port_file = tmp / "proxy.port"
    proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--proxy",
                             str(upstream_port), str(port_file)], start_new_session=True)
    deadline = time.monotonic() + 15
    while not port_file.exists():
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise RuntimeError("the latency proxy did not start")
        time.sleep(0.05)
    return proc, f"127.0.0.1:{port_file.read_text()}"


# -- the harness: registry, images, baseline checkout, workers ---------------------------------


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Pusher:
    """Blobs and manifests put straight into the token-auth registry, with one token that
    may push to every repository named."""

    def __init__(self, address: str, tokens: Any, repos: list[str]) -> None:
        import httpx

        headers = {} if tokens is None else {"Authorization": "Bearer " + tokens.issue(
            USER, [f"repository:{r}:pull,push" for r in repos])}
        self.address = address
        self.http = httpx.Client(base_url=f"http://{address}", timeout=30, headers=headers)

    def blob(self, repo: str, data: bytes) -> dict[str, Any]:
        digest = digest_of(data)
        r = self.http.post(f"/v2/{repo}/blobs/uploads/")
        r.raise_for_status()
        location = r.headers["location"]
        sep = "&" if "?" in location else "?"
        self.http.put(f"{location}{sep}digest={digest}", content=data, headers={
            "Content-Type": "application/octet-stream"}).raise_for_status()
        return {"digest": digest, "size": len(data)}

    def image(self, repo: str, arch: str, created: str) -> tuple[bytes, str]:
        """A one-layer image manifest (not tagged yet) and its config digest."""
        layer = self.blob(repo, f"layer {repo} {arch} {created}".encode())
        config = json.dumps({"architecture": arch, "os": "linux", "created": created,
                             "rootfs": {"type": "layers", "diff_ids": [layer["digest"]]},
                             "config": {}}).encode()
        cfg = self.blob(repo, config)
        body = json.dumps({"schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
                           "config": {"mediaType": CONFIG_TYPE, **cfg},
                           "layers": [{"mediaType": LAYER_TYPE, **layer}]}).encode()
        return body, cfg["digest"]

    def put(self, repo: str, tag: str, body: bytes, media_type: str = DOCKER_MANIFEST) -> str:
        self.http.put(f"/v2/{repo}/manifests/{tag}", content=body,
                      headers={"Content-Type": media_type}).raise_for_status()
        return digest_of(body)

    def index(self, repo: str, tag: str, entries: list[tuple[bytes, str]]) -> str:
        body = json.dumps({"schemaVersion": 2, "mediaType": DOCKER_LIST, "manifests": [
            {"mediaType": DOCKER_MANIFEST, "size": len(m), "digest": digest_of(m),
             "platform": {"architecture": arch, "os": "linux"}} for m, arch in entries]}
                          ).encode()
        return self.put(repo, tag, body, DOCKER_LIST)


def push_all(address: str, tokens: Any, tags: int) -> dict[str, Any]:
    """``tags`` tags over REPOS repositories (one image per repository, its tags put as
    manifests, no layers uploaded again), and a multi-arch tag moved on to a new index."""
    from concurrent.futures import ThreadPoolExecutor

    repos = [f"bench/r{i}" for i in range(REPOS)]
    p = Pusher(address, tokens, [*repos, "bench/multi"])
    try:
        images = {r: p.image(r, "amd64", f"2026-01-{i + 1:02d}T00:00:00Z")
                  for i, r in enumerate(repos)}
        names = [(repos[i % REPOS], f"t{i // REPOS}") for i in range(tags)]
        with ThreadPoolExecutor(4) as pool:
            digests = list(pool.map(lambda n: p.put(n[0], n[1], images[n[0]][0]), names))
        cycle_tags = [(repo, tag, digest, images[repo][1])
                      for (repo, tag), digest in zip(names, digests, strict=True)]
        # The multi-arch tag: the host pulled the old index on amd64; upstream rebuilt the
        # amd64 image (arm64 unchanged) and moved the tag to a new index.
        old_amd64, old_config = p.image("bench/multi", "amd64", "2026-02-01T00:00:00Z")
        arm64, _ = p.image("bench/multi", "arm64", "2026-02-01T00:00:00Z")
        new_amd64, _ = p.image("bench/multi", "amd64", "2026-03-01T00:00:00Z")
        for body in (old_amd64, arm64, new_amd64):
            p.put("bench/multi", digest_of(body), body)
        old_index = p.index("bench/multi", "latest", [(old_amd64, "amd64"), (arm64, "arm64")])
        p.index("bench/multi", "other", [(old_amd64, "amd64"), (arm64, "arm64")])
        p.index("bench/multi", "latest", [(new_amd64, "amd64"), (arm64, "arm64")])
    finally:
        p.http.close()
    return {"cycle_tags": cycle_tags,
            "moved": {"repo": "bench/multi", "tag": "latest", "warm_tag": "other",
                      "image_id": old_config, "old_index": old_index}}


def run_worker(checkout: Path, spec: Path) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(checkout), "PYTHONDONTWRITEBYTECODE": "1"}
    out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker",
                          str(spec), str(checkout)],
                         capture_output=True, text=True, env=env, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"worker at {checkout} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True,
                          check=True).stdout.strip()


def verdict(ok: bool) -> str:
    return "met" if ok else "not met"


def med(runs: list[dict[str, Any]], *path: str) -> float:
    values = []
    for r in runs:
        for key in path:
            r = r[key]
        values.append(r)
    return statistics.median(values)


def spread(runs: list[dict[str, Any]], *path: str) -> str:
    values = []
    for r in runs:
        for key in path:
            r = r[key]
        values.append(r)
    return f"{min(values):.3g} to {max(values):.3g}" if len(values) > 1 else "-"


def cpu_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of every CPU of the machine so far, from /proc/stat."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(fields) - fields[3] - fields[4], sum(fields)  # idle and iowait are not busy


def raw_head(proxy: str, tokens: Any, tags: list[tuple[str, str]]) -> float:
    """Median wall time of one HEAD through the proxy from the cheapest client there is (one
    kept connection, the request bytes made beforehand), one after another."""
    import socket

    host, port = proxy.rsplit(":", 1)
    auth = "" if tokens is None else "Authorization: Bearer " + tokens.issue(
        USER, [f"repository:{r}:pull" for r in sorted({r for r, _ in tags})]) + "\r\n"
    requests = [(f"HEAD /v2/{repo}/manifests/{tag} HTTP/1.1\r\nHost: {proxy}\r\n{auth}"
                 f"Accept: {DOCKER_MANIFEST}, {DOCKER_LIST}\r\n\r\n").encode()
                for repo, tag in tags]
    times = []
    with socket.create_connection((host, int(port))) as sock:
        for i, request in enumerate(requests * 2):
            started = time.perf_counter()
            sock.sendall(request)
            answer = b""
            while not answer.endswith(b"\r\n\r\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    raise RuntimeError("the proxy closed the connection")
                answer += chunk
            if not answer.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"HEAD through the proxy: {answer[:80]!r}")
            if i >= len(requests):  # the first pass warms the registry up
                times.append(time.perf_counter() - started)
    return statistics.median(times)


def calibrate(proxy: str, tokens: Any, tags: list[tuple[str, str]]) -> dict[str, float]:
    """The delay that makes one HEAD alone take CYCLE_LATENCY from the cheapest client, and
    not less: a registry that far away, as a client measures it. What the registry and the
    proxy take is not a constant to subtract (idle between requests, every process wakes up
    slower), so the delay is found by measuring at it."""
    control(proxy, "delay/0")
    service = raw_head(proxy, tokens, tags)
    delay, took = CYCLE_LATENCY, 0.0
    for attempt in range(8):
        control(proxy, f"delay/{delay}")
        took = raw_head(proxy, tokens, tags)
        if attempt >= 2 and CYCLE_LATENCY <= took < CYCLE_LATENCY * 1.02:
            break
        # Below L, one step up at least, so that it ends on the conservative side.
        delay = max(0.0, delay - (took - CYCLE_LATENCY) + (2e-5 if took < CYCLE_LATENCY else 0))
    else:
        raise RuntimeError(f"no delay gives one HEAD in {CYCLE_LATENCY * 1000:.0f} ms "
                           f"(last {took * 1000:.2f} ms at {delay * 1000:.2f} ms)")
    return {"service_s": service, "delay_s": delay, "one_s": took}


def measure(baseline: str, quick: bool, tags: int, auth: str) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    from tests.registries import TokenServer, start_token_registry
    from tests.services import Registry

    repeats = 2 if quick else 3
    with tempfile.TemporaryDirectory(prefix="bench-regcost-") as tmp_name:
        tmp = Path(tmp_name)
        base_dir = tmp / "baseline"
        git("worktree", "add", "--detach", str(base_dir), baseline)
        tokens = TokenServer(tmp / "tokens", {USER: PASSWORD}).start() \
            if auth == "token" else None
        registry = start_token_registry(tmp / "registry", tokens) if tokens is not None \
            else Registry(tmp / "registry").start()
        proxy_proc = None
        try:
            pushed = time.monotonic()
            data = push_all(registry.address, tokens, tags)
            print(f"pushed in {time.monotonic() - pushed:.1f} s", file=sys.stderr)
            proxy_proc, proxy = start_proxy(registry.port, tmp)
            cpu_tags = [(r, t) for r, t, _, _ in data["cycle_tags"][:min(CPU_TAGS, tags)]]
            calibrated = calibrate(proxy, tokens, cpu_tags[:50])
            spec = tmp / "spec.json"
            spec.write_text(json.dumps({"registry": registry.address, "proxy": proxy,
                                        "registry_pid": registry.proc.pid, "cpu_tags": cpu_tags,
                                        "passes": PASSES,
                                        "calibrated_delay": calibrated["delay_s"],
                                        **data}))
            runs: dict[str, list[dict[str, Any]]] = {"ours": [], "baseline": []}
            load, ticks = os.getloadavg()[0], cpu_ticks()
            order = [("ours", ROOT), ("baseline", base_dir)]
            for i in range(repeats):
                for name, checkout in (order if i % 2 else order[::-1]):
                    runs[name].append(run_worker(checkout, spec))
                    print(f"{name} run {i + 1}: {json.dumps(summary(runs[name][-1]))}",
                          file=sys.stderr, flush=True)
            busy = (cpu_ticks()[0] - ticks[0]) / max(1, cpu_ticks()[1] - ticks[1])
            load = (load, os.getloadavg()[0])
        finally:
            if proxy_proc is not None:
                proxy_proc.terminate()
                proxy_proc.wait(10)
            registry.stop()
            if tokens is not None:
                tokens.stop()
            git("worktree", "remove", "--force", str(base_dir))
    return {"runs": runs, "repeats": repeats, "busy": busy, "load": load, "tags": tags,
            "calibrated": calibrated,
            "cpu_heads": len(cpu_tags) * PASSES,
            "baseline": git("rev-parse", "--short", baseline),
            "ours": git("rev-parse", "--short", "HEAD") + (
                " + uncommitted changes" if git("status", "--porcelain", "--", "exporter")
                else "")}


def summary(r: dict[str, Any]) -> dict[str, Any]:
    c = r["cycle"]
    return {"cpu_ms": round(r["cpu"]["cpu_ms_per_head"], 4),
            "moved": [r["moved"]["status"], r["moved"]["requests"],
                      round(r["moved"]["round_trips"], 2)],
            "first_s": round(c["first"]["wall_s"], 3), "next_s": round(c["next"]["wall_s"], 3),
            "one_ms": round(c["next"]["one_head_s"] * 1e3, 2),
            "added_s": round(c["added"]["wall_s"], 3),
            "added_one_ms": round(c["added"]["one_head_s"] * 1e3, 2),
            "reg_ms": round(r["cpu"]["registry_ms_per_head"], 3),
            "cycle_cpu": [round(c["next"][k] * 1e3 / c["next"]["requests"], 3)
                          for k in ("cpu_s", "registry_cpu_s", "proxy_cpu_s")]}


def describe(request: str) -> str:
    """"GET /v2/bench/multi/manifests/sha256:1ea3..." -> "GET manifests/sha256:1ea32c2..."."""
    method, path = request.split(" ", 1)
    kind, _, name = path.split("/", 4)[-1].partition("/")
    return f"{method} {kind}/{name[:14] + '...' if len(name) > 24 else name}"


def section(quick: bool, baseline: str = DEFAULT_BASELINE, tags: int = 1000,
            auth: str = "token") -> str:
    m = measure(baseline, quick, tags, auth)
    runs, n = m["runs"], m["tags"]
    ours, base = runs["ours"], runs["baseline"]
    c = ours[0]["cycle"]["per_registry"]
    cores = os.cpu_count() or 1
    bound = n * CYCLE_LATENCY / c
    both = (("ours", ours), ("baseline", base))

    cpu_rows = []
    for name, rs in both:
        cpu = med(rs, "cpu", "cpu_ms_per_head")
        cpu_rows.append(f"| {name} | {m['cpu_heads']:,} | {cpu:.3f} | "
                        f"{spread(rs, 'cpu', 'cpu_ms_per_head')} | "
                        f"{med(rs, 'cpu', 'registry_ms_per_head'):.2f} | "
                        f"{med(rs, 'cpu', 'heads_per_s'):,.0f} | <= {CPU_TARGET_MS} ms: "
                        f"{verdict(cpu <= CPU_TARGET_MS)} |")
    moved_rows = []
    for name, rs in both:
        statuses = sorted({r["moved"]["status"] for r in rs})
        requests = sorted({r["moved"]["requests"] for r in rs})
        moved_rows.append(f"| {name} | {'/'.join(statuses)} | "
                          f"{'/'.join(str(q) for q in requests)} | "
                          f"{med(rs, 'moved', 'wall_s') * 1000:.0f} | "
                          f"{med(rs, 'moved', 'round_trips'):.1f} | "
                          f"{spread(rs, 'moved', 'round_trips')} |")
    asked = ", ".join(f"`{describe(r)}`" for r in ours[0]["moved"]["log"])
    cycle_rows, cpu_split = [], []
    for label, latency in (("next", "L as a client sees it"),
                           ("added", f"{CYCLE_LATENCY * 1000:.0f} ms on top")):
        for name, rs in both:
            wall = med(rs, "cycle", label, "wall_s")
            floor = med(rs, "cycle", label, "one_head_s") * n / c
            requests = med(rs, "cycle", label, "requests")
            per = {k: med(rs, "cycle", label, k) / requests * 1000
                   for k in ("cpu_s", "registry_cpu_s", "proxy_cpu_s")}
            cpu_floor = sum(per.values()) * requests / 1000 / cores
            cycle_rows.append(
                f"| {name} | {latency} | {requests:,.0f} | {wall:.2f} "
                f"| {spread(rs, 'cycle', label, 'wall_s')} "
                f"| {wall / bound:.2f}x | {floor:.2f} s, {wall / floor:.2f}x "
                f"| {cpu_floor:.2f} s, {wall / cpu_floor:.2f}x "
                f"| <= {CYCLE_TARGET}x N·L/c: {verdict(wall / bound <= CYCLE_TARGET)} |")
            cpu_split.append(f"| {name} | {latency} | {per['cpu_s']:.2f} "
                             f"| {per['registry_cpu_s']:.2f} | {per['proxy_cpu_s']:.2f} | "
                             f"{med(rs, 'cycle', label, 'proxy_cpu_s') / wall * 100:.0f} % |")
    one_ms = {label: med(ours, "cycle", label, "one_head_s") * 1000
              for label in ("next", "added")}
    cal = {k: f"{v * 1000:.2f}" for k, v in m["calibrated"].items()}
    ell = f"{CYCLE_LATENCY * 1000:.0f}"
    states = ours[0]["cycle"]["next"].get("states", {})
    flag = " --quick" if quick else ""
    auth_text = "bearer-token auth (our token server, in the harness's process)" \
        if auth == "token" else "no auth (anonymous)"
    return f"""## 7. Registry requests: CPU, round trips, the 1,000-tag cycle

Written by `bench/registry_cost.py{flag} --baseline {baseline} --tags {n} --auth {auth}`:
ours ({m['ours']}) beside the baseline ({m['baseline']}) in the same run, each run
{m['repeats']} times, alternating which goes first; medians, with the range over the runs.
The baseline is checked out with `git worktree add --detach` and both run the same
measuring code, each in a subprocess of its own with `PYTHONPATH` at its checkout, building
the registry side as `make_source` does (the default configuration: {c} requests in flight
per registry). A real CNCF Distribution 2.8 with {auth_text}, {n:,} tags in {REPOS}
repositories (one image each, its tags put as manifests). Latency is added by an asyncio
proxy in a process of its own, before each request it forwards; it counts the requests
and reports its own CPU. The registry's CPU is read from `/proc`. While the runs went on
the machine's CPUs were {m['busy'] * 100:.0f} % busy, everything included (load average
{m['load'][0]:.1f} before, {m['load'][1]:.1f} after): wall times here are as good as the
machine was quiet.

### CPU per registry HEAD

{THREADS} threads send `head_digest` over {min(CPU_TAGS, n)} tags, {PASSES} times, with
`fresh_for=0` so every call is a real HEAD, straight to the registry (a first pass, which
makes first contact and fetches the tokens, is not timed). CPU is `time.process_time()` of
the worker process around the loop, per HEAD; the registry's, a process of its own, beside
it.

| run | HEADs | CPU ms per HEAD | range | registry CPU ms per HEAD | HEADs per s | target |
|---|---|---|---|---|---|---|
{chr(10).join(cpu_rows)}

### A moved multi-arch tag, {MOVED_LATENCY * 1000:.0f} ms per request

The host holds the old image of a two-platform tag (classic store: image ID = its amd64
config, RepoDigest = the old index); upstream rebuilt amd64 and moved the tag to a new
index. One `DriftCheck` call, after the registry was contacted once (`GET /v2/` and the
repository's token are not in it); requests counted at the proxy; round trips = wall time /
{MOVED_LATENCY * 1000:.0f} ms. Ours asked, in this order: {asked}.

| run | decided | requests | wall ms | round trips | range |
|---|---|---|---|---|---|
{chr(10).join(moved_rows)}

### A cycle of {n:,} tags, {CYCLE_LATENCY * 1000:.0f} ms per request

The upstream loop's scheduler (`Checks`, run whole with `cycle()` as `report --check` does)
with `DriftCheck` and the state store, every tag current
({', '.join(f'{v} {k}' for k, v in states.items())} in ours). Not counted: the first
cycle of every tag, which makes first contact, fetches each repository's token and looks
once for each image's signature; each timed cycle is a new scheduler round the same client
and `DriftCheck`, so every tag is due and costs one HEAD, as in every cycle after the
first. N·L/c = {n:,} x {CYCLE_LATENCY * 1000:.0f} ms / {c} = {bound:.2f} s.

L is what a client waits for one answer from a registry {ell} ms away. The
proxy's delay is set so that one HEAD alone takes that long from the cheapest client there
is (a raw socket on one kept connection, the request bytes made beforehand; the median of
50 HEADs one after another):

- with nothing added, one HEAD took {cal['service_s']} ms (the registry's work and the
  proxy's two hops);
- the delay found is {cal['delay_s']} ms, with which one HEAD took {cal['one_s']} ms. The
  processes wake from idle between requests slower than they answer back to back, so the
  delay is found by measuring at it, not by subtracting;
- the exporter's own time is not taken off: one HEAD alone through its client took
  {one_ms['next']:.1f} ms (median of 25).

Beside it, the same cycle with {ell} ms added on top of what the registry takes, as this
section measured before (one HEAD alone through the exporter's client: {one_ms['added']:.1f} ms).
The latency floor is one HEAD alone through the exporter's client x N / c.
The CPU floor is the CPU the worker, the registry and the proxy spent per request, x N /
{cores} cores: all three share this machine's {cores} cores, and the registry's share grows
with the requests in flight.

| run | latency | requests | wall s | range | / N·L/c | latency floor | CPU floor | target |
|---|---|---|---|---|---|---|---|---|
{chr(10).join(cycle_rows)}

CPU per request in that cycle, ms (the proxy's also as a share of one core):

| run | latency | worker (exporter) | registry | proxy | proxy, of one core |
|---|---|---|---|---|---|
{chr(10).join(cpu_split)}
"""


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker({**json.loads(Path(sys.argv[2]).read_text()), "checkout": sys.argv[3]})
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--proxy":
        # select(2) takes its timeout in microseconds; epoll, asyncio's default, in whole
        # milliseconds, rounded up, which made a 20 ms delay anything up to 21 ms.
        with asyncio.Runner(loop_factory=lambda: asyncio.SelectorEventLoop(
                selectors.SelectSelector())) as runner:
            runner.run(Proxy(int(sys.argv[2])).main(Path(sys.argv[3])))
        return
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="2 runs each instead of 5")
    ap.add_argument("--baseline", default=DEFAULT_BASELINE, help="the commit to compare with")
    ap.add_argument("--tags", type=int, default=0, help="tags in the cycle (default 1,000, "
                    "500 with --quick; up to 250 of them for the CPU per HEAD)")
    ap.add_argument("--auth", choices=("token", "anonymous"), default="token",
                    help="the registry's auth: bearer tokens from our token server, or none")
    args = ap.parse_args()
    if shutil.which("docker-registry") is None:
        raise SystemExit("needs docker-registry (Debian's CNCF Distribution)")
    started = time.monotonic()
    print(section(args.quick, args.baseline, args.tags or (500 if args.quick else 1000),
                  args.auth))
    print(f"({time.monotonic() - started:.0f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
