"""Scrape cost against a real dockerd holding many tags and containers.

    .venv/bin/python bench/scrape_cost.py --tags 2000 --containers 500

Starts a private dockerd, fills it through the Engine API (distinct images, each tagged
several times, and created containers), runs the exporter as a subprocess, waits until it has
read everything, then times sequential scrapes. Prints one Markdown table row per run.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.services import Dockerd, ExporterProcess, Metrics, wait_for


def fill(d: Dockerd, tags: int, containers: int, tags_per_image: int) -> None:
    transport = httpx.HTTPTransport(uds=str(d.socket))
    tarball = (d.root / "busybox.tar").read_bytes()
    with httpx.Client(transport=transport, base_url="http://docker/v1.41", timeout=120) as api:
        images = max(1, tags // tags_per_image)
        ids = []
        for i in range(images):
            r = api.post("/images/create", params={"fromSrc": "-", "repo": f"bench/img{i}",
                                                   "tag": "t0", "changes": f"LABEL n={i}"},
                         content=tarball, headers={"Content-Type": "application/x-tar"})
            r.raise_for_status()
            ids.append(f"bench/img{i}:t0")
        made = images
        i = 0
        while made < tags:
            src = ids[i % images]
            api.post(f"/images/{src}/tag",
                     params={"repo": f"bench/img{i % images}", "tag": f"t{1 + i // images}"}
                     ).raise_for_status()
            made += 1
            i += 1
        for c in range(containers):
            api.post("/containers/create", params={"name": f"bench-c{c}"},
                     json={"Image": ids[c % images], "Cmd": ["/bin/busybox", "true"],
                           "HostConfig": {"NetworkMode": "none"}}).raise_for_status()


def measure(tags: int, containers: int, scrapes: int, tags_per_image: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        d = Dockerd(Path(tmp) / "d").start()
        try:
            d.make_base_image("bench-base:1")
            started = time.monotonic()
            fill(d, tags, containers, tags_per_image)
            fill_s = time.monotonic() - started
            started = time.monotonic()
            exp = ExporterProcess(["--docker.host", d.host, "--collector.engine.interval", "15s"],
                                  Path(tmp) / "exporter.log").start()
            try:
                m = wait_for(lambda: (lambda m: m if len(m.select("docker_image_info"))
                                      >= tags + 1 else None)(exp.scrape()),
                             600, "the exporter to see every tag", interval=0.5)
                first_read_s = time.monotonic() - started
                latencies = []
                body = ""
                for _ in range(scrapes):
                    t0 = time.perf_counter()
                    body = httpx.get(exp.url + "/metrics", timeout=30).text
                    latencies.append(time.perf_counter() - t0)
                m = Metrics.parse(body)
                latencies.sort()
                return {
                    "tags": tags, "containers": containers,
                    "median_ms": statistics.median(latencies) * 1000,
                    "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
                    "body_kb": len(body.encode()) / 1000,
                    "series": sum(1 for line in body.splitlines()
                                  if line and not line.startswith("#")),
                    "rss_mb": m.get("process_resident_memory_bytes") / 1e6,
                    "refresh_s": m.get("docker_exporter_collector_duration_seconds",
                                       collector="engine"),
                    "first_read_s": first_read_s, "fill_s": fill_s,
                }
            finally:
                exp.stop()
        finally:
            d.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tags", type=int, nargs="+", default=[200, 2000])
    ap.add_argument("--containers", type=int, default=500)
    ap.add_argument("--scrapes", type=int, default=200)
    ap.add_argument("--tags-per-image", type=int, default=10)
    args = ap.parse_args()
    print(f"machine: {platform.machine()}, {platform.python_implementation()} "
          f"{platform.python_version()}, {platform.platform()}")
    print("| tags | containers | scrape median ms | p99 ms | body kB | series | RSS MB | "
          "engine refresh s | first full read s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for tags in args.tags:
        r = measure(tags, args.containers, args.scrapes, args.tags_per_image)
        print(f"| {r['tags']} | {r['containers']} | {r['median_ms']:.1f} | {r['p99_ms']:.1f} | "
              f"{r['body_kb']:.0f} | {r['series']} | {r['rss_mb']:.1f} | "
              f"{r['refresh_s']:.2f} | {r['first_read_s']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
