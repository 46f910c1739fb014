"""The status page's cost beside a scrape's, on the same exporter, in the same run.

    .venv/bin/python bench/status_page.py --tags 2000 --containers 500

A real registry (CNCF Distribution) holds --tags version tags over 10 repositories, one
image each, and a tenth of the tags moved on to a second image. The stand-in engine
(bench/standin_engine.py) says this host pulled all of them before they moved: images of 10
tags each and --containers containers. The exporter checks every tag against the registry
(drift) and finds newer versions for nearly all, so every table of the page has rows. Then
GET /metrics, GET / and GET /status.json are timed in turn, --requests times each, once with
the engine read every 15 s (the default) and once every second, where a fresh snapshot
makes the page rebuild its rows (and the scrape re-render its families) about once a second.
"""

from __future__ import annotations

import argparse
import hashlib
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.standin_engine import StandInEngine
from tests.services import Dockerd, ExporterProcess, Registry, wait_for

V2 = "application/vnd.docker.distribution.manifest.v2+json"
REPOS = 10
TAGS_PER_IMAGE = 10


def publish(d: Dockerd, reg: Registry, tags: int) -> list[tuple[str, list[str], str]]:
    """Version tags 1.0 .. 1.N in each repository, all naming one image; a tenth of them then
    name a second image. Returns the local images a host that pulled them all before the move
    has: (ID, tags, repo digest), TAGS_PER_IMAGE tags each."""
    d.build("bench-page-a:1", "FROM bench-base:1\nCOPY v /v\n", {"v": "a"})
    d.build("bench-page-b:1", "FROM bench-base:1\nCOPY v /v\n", {"v": "b"})
    local = []
    with httpx.Client(timeout=30) as client:
        for r in range(REPOS):
            repo = f"bench/page{r}"
            bodies = {}
            for name in ("a", "b"):
                d.cli("tag", f"bench-page-{name}:1", f"{reg.address}/{repo}:{name}")
                d.cli("push", f"{reg.address}/{repo}:{name}")
                bodies[name] = client.get(f"http://{reg.address}/v2/{repo}/manifests/{name}",
                                          headers={"Accept": V2}).content
            digest = "sha256:" + hashlib.sha256(bodies["a"]).hexdigest()
            refs = []
            for t in range(tags // REPOS):
                body = bodies["b"] if t % 10 == 3 else bodies["a"]
                client.put(f"http://{reg.address}/v2/{repo}/manifests/1.{t}", content=body,
                           headers={"Content-Type": V2}).raise_for_status()
                refs.append(f"{reg.address}/{repo}:1.{t}")
            for i in range(0, len(refs), TAGS_PER_IMAGE):
                local.append((f"sha256:{len(local):064x}", refs[i:i + TAGS_PER_IMAGE],
                              f"{reg.address}/{repo}@{digest}"))
    return local


def timed(client: httpx.Client, url: str) -> tuple[float, int]:
    started = time.perf_counter()
    r = client.get(url, headers={"Accept-Encoding": "identity"})
    elapsed = time.perf_counter() - started
    r.raise_for_status()
    return elapsed, len(r.content)


def measure(engine: StandInEngine, tags: int, requests: int, interval: str,
            log: Path) -> dict[str, tuple[float, float, float]]:
    exp = ExporterProcess(["--docker.host", engine.host, "--hub.enabled", "false",
                           "--events.enabled", "false", "--collector.engine.interval", interval,
                           "--collector.disk.interval", "1h", "--upstream.interval", "1h",
                           "--upstream.include", "/bench/page",
                           "--state.path", str(log.with_suffix(".db"))], log).start()
    try:
        def complete() -> bool:
            doc = httpx.get(exp.url + "/status.json", timeout=60).json()
            ok = {s["name"]: s["state"] for s in doc["sources"]}
            checked = sum(1 for t in doc["tags"] if t["upstream"] in ("current", "drifted"))
            newer = sum(1 for t in doc["tags"] if t["newer_version"])
            return ok.get("upstream") == ok.get("versions") == "ok" and checked >= tags \
                and newer >= tags - REPOS
        wait_for(complete, 1800, "every tag checked and compared", interval=2)
        paths = {"scrape": f"{exp.url}/metrics", "page": f"{exp.url}/",
                 "json": f"{exp.url}/status.json"}
        samples: dict[str, list[float]] = {k: [] for k in paths}
        sizes: dict[str, int] = {}
        with httpx.Client(timeout=60) as client:
            for _ in range(requests):
                for name, url in paths.items():
                    elapsed, sizes[name] = timed(client, url)
                    samples[name].append(elapsed)
        out = {}
        for name, values in samples.items():
            values.sort()
            out[name] = (statistics.median(values) * 1000,
                         values[max(0, int(len(values) * 0.99) - 1)] * 1000, sizes[name] / 1000)
        return out
    finally:
        exp.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tags", type=int, default=2000)
    ap.add_argument("--containers", type=int, default=500)
    ap.add_argument("--requests", type=int, default=200)
    args = ap.parse_args()
    print(f"machine: {platform.machine()}, {platform.python_implementation()} "
          f"{platform.python_version()}, {platform.platform()}")
    with tempfile.TemporaryDirectory(prefix="bench-page-") as tmp:
        root = Path(tmp)
        reg = Registry(root / "registry").start()
        d = Dockerd(root / "d").start()
        engine = None
        try:
            d.make_base_image("bench-base:1")
            local = publish(d, reg, args.tags)
            engine = StandInEngine(root / "standin.sock", 0, args.containers, pulled=local)
            print("| engine read every | tags | containers | request | median ms | p99 ms "
                  "| body kB |\n|---|---|---|---|---|---|---|")
            for interval in ("15s", "1s"):
                result = measure(engine, args.tags, args.requests, interval,
                                 root / f"exporter-{interval}.log")
                for name, label in (("scrape", "GET /metrics"), ("page", "GET /"),
                                    ("json", "GET /status.json")):
                    median, p99, kb = result[name]
                    print(f"| {interval} | {args.tags:,} | {args.containers:,} | {label} | "
                          f"{median:.1f} | {p99:.1f} | {kb:,.0f} |", flush=True)
        finally:
            if engine is not None:
                engine.stop()
            d.stop()
            reg.stop()


if __name__ == "__main__":
    main()
