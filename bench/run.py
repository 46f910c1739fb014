"""The benchmark: every figure beside its baseline, written to BENCHMARKS.md.

    .venv/bin/python bench/run.py            # about 20 minutes on 2 cores
    .venv/bin/python bench/run.py --quick    # smaller sizes, to try it out
    .venv/bin/python bench/run.py --only 6   # measure section 6 again, keep the others

1. Scrape cost against the number of tags and containers, the exporter as shipped (reads in
   the background, renders cached text) beside the same exporter with --collector.on-scrape
   (reads the engine during every scrape, as most exporters do). A real dockerd with a few
   hundred images; a stand-in engine (bench/standin_engine.py) for the large counts.
2. Scrape latency while the engine is slow (/system/df and /images/json take 3 s).
3. One upstream check cycle of 1,000 distinct tags against the real registry behind a proxy
   that adds 20 ms per request (a registry across a network), default concurrency beside
   concurrency 1, with the requests counted at the registry and the token server.
4. Fleet: 20 exporters watching the same 200 tags, with and without fleet mode.
6. Scrapes as Prometheus paces them beside back-to-back ones, CPU per engine cycle with
   nothing changed, start-up to the first complete result, memory (bench/paced.py).
7. Registry requests beside a baseline commit: CPU per HEAD, the round trips of a moved
   tag at 50 ms, a 1,000-tag cycle at 20 ms against N·L/c (bench/registry_cost.py).
8. A Kubernetes node read through CRI: a real containerd with 1,000 images, a read's cost
   first, unchanged and after a pull, the exporter's memory and CPU (bench/cri_node.py).

Section 5, the soak, is bench/soak.py's; every run keeps the sections it does not measure.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.scrape_cost import fill  # noqa: E402
from bench.standin_engine import StandInEngine  # noqa: E402
from tests.services import Dockerd, ExporterProcess, wait_for  # noqa: E402

COMMON = ("--upstream.mode", "off", "--hub.enabled", "false")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def measure(host: str, tags: int, scrapes: int, log: Path, *extra: str) -> dict[str, float]:
    exp = ExporterProcess(["--docker.host", host, *COMMON, *extra], log).start()
    try:
        def complete() -> bool:
            text = httpx.get(exp.url + "/metrics", timeout=120).text
            return text.count("docker_image_info{") >= tags and \
                'docker_exporter_collector_success{collector="disk"} 1.0' in text
        wait_for(complete, 900, "the exporter to see every tag", interval=1)
        latencies, body = [], b""
        with httpx.Client(timeout=300) as client:
            for _ in range(scrapes):
                started = time.perf_counter()
                body = client.get(exp.url + "/metrics").content
                latencies.append(time.perf_counter() - started)
        latencies.sort()
        return {"median_ms": statistics.median(latencies) * 1000,
                "p99_ms": latencies[max(0, int(len(latencies) * 0.99) - 1)] * 1000,
                "body_kb": len(body) / 1000,
                "series": sum(1 for ln in body.splitlines() if ln and not ln.startswith(b"#")),
                "rss_mb": rss_mb(exp.proc.pid)}
    finally:
        exp.stop()


def scrape_rows(sizes: list[tuple[str, str, int, int]], scrapes: int, tmp: Path) -> list[str]:
    rows = []
    for label, kind, tags, containers in sizes:
        if kind == "real":
            d = Dockerd(tmp / f"d-{tags}").start()
            d.make_base_image("bench-base:1")
            fill(d, tags, containers, tags_per_image=10)
            host, cleanup = d.host, d.stop
        else:
            engine = StandInEngine(tmp / f"standin-{tags}.sock", tags, containers)
            host, cleanup = engine.host, engine.stop
        try:
            n = max(10, scrapes if tags <= 20000 else scrapes // 5)
            ours = measure(host, tags, n, tmp / "ours.log")
            base = measure(host, tags, max(5, n // 2), tmp / "base.log",
                           "--collector.on-scrape", "true")
        finally:
            cleanup()
        rows.append(
            f"| {label} | {tags:,} | {containers:,} | {ours['median_ms']:.1f} | "
            f"{ours['p99_ms']:.1f} | {base['median_ms']:.1f} | {base['p99_ms']:.1f} | "
            f"{base['median_ms'] / ours['median_ms']:.1f}x | {ours['body_kb']:,.0f} | "
            f"{ours['series']:,} | {ours['rss_mb']:.0f} | {base['rss_mb']:.0f} |")
        print(rows[-1], flush=True)
    return rows


def slow_engine_rows(tmp: Path, scrapes: int) -> list[str]:
    engine = StandInEngine(tmp / "slow.sock", 2000, 500)
    try:
        args = ("--collector.engine.interval", "1s", "--collector.disk.interval", "1s")
        idle = measure(engine.host, 2000, scrapes, tmp / "idle.log", *args)
        engine.delays.update({"/system/df": 3.0, "/images/json": 3.0})
        slow = measure(engine.host, 2000, scrapes, tmp / "slow.log", *args)
    finally:
        engine.stop()
    ratio = slow["median_ms"] / idle["median_ms"]
    return [f"| engine answering at once | {idle['median_ms']:.1f} | {idle['p99_ms']:.1f} | |",
            f"| /system/df and /images/json take 3 s | {slow['median_ms']:.1f} | "
            f"{slow['p99_ms']:.1f} | {ratio:.2f}x the idle median |"]


def upstream_rows(tags: int) -> list[str]:
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "upstream_cycle.py"),
                          "--tags", str(tags), "--repos", "20", "--latency", "0.02"],
                         capture_output=True, text=True, check=True, timeout=3600)
    return [line for line in out.stdout.splitlines()
            if line.startswith("| ") and not line.startswith("| run ")]


HEADER = ("| engine | tags | containers | ours median ms | ours p99 ms | on-scrape median ms "
          "| on-scrape p99 ms | speed-up | body kB | series | ours RSS MB | on-scrape RSS MB |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|---|")


SCRAPE = """## 1. Scrape cost against tags and containers

"ours" is the exporter as shipped: sources read in the background, and a renderer thread
formats a collector's families again only when its snapshot changes, so a scrape takes ready
text. "on-scrape" is the same exporter with `--collector.on-scrape true`, reading images,
containers and `/system/df` during every scrape, as most exporters do. Upstream checks are
off (the stand-in's tags are made up). Medians and 99th percentiles of sequential scrapes.

""" + HEADER + """
{rows}
"""

SLOW = """## 2. Scrape latency while the engine is slow

Stand-in engine, 2,000 tags and 500 containers, both collectors refreshing every second.

| engine | scrape median ms | p99 ms | ratio |
|---|---|---|---|
{rows}
"""

UPSTREAM = """## 3. One upstream check cycle of {tags:,} distinct tags

Real CNCF Distribution with bearer-token auth (our token server), 20 repositories, behind a
proxy that adds 20 ms to every exporter request. Requests counted at the registry (access
log, the exporter's User-Agent) and at the token server. Each start-up also sends one
`GET /v2/`, which teaches the exporter the registry's auth challenge (not counted below).
The changed tags all moved to one new image, so its manifest is fetched once for the cycle.
Each run starts the exporter afresh on the same state file; the time runs from spawning it
until a scrape (every 0.1 s) shows every tag checked, start-up included (about 0.5 s). The
cycle alone, beside its bound N·L/c, is in section 7.

| run | start to every tag checked, s | HEAD | GET | token requests | drifted |
|---|---|---|---|---|---|
{rows}
"""

FLEET = """## 4. Fleet: many exporters watching the same tags

Stand-in engines serving the same images, whose tags and digests are real ones in a real
registry. Without fleet mode every exporter checks its own tags; with it the hosts run
`--upstream.mode=off` and one central checker checks each distinct tag once. HEADs counted
at the registry for one cycle of every exporter.

| set-up | distinct tags | HEAD requests | per distinct tag |
|---|---|---|---|
{rows}
"""

MEASURED = (1, 2, 3, 4, 6, 7, 8)  # section 5 is bench/soak.py's


def fleet_rows(hosts: int, tags: int) -> list[str]:
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "fleet.py"), "--hosts",
                          str(hosts), "--tags", str(tags)],
                         capture_output=True, text=True, check=True, timeout=3600)
    return [line for line in out.stdout.splitlines() if line.startswith("| ")]


SECTION_HEADING = re.compile(r"^## (\d+)\. ", re.M)


def sections_of(text: str) -> dict[int, str]:
    """The numbered sections of BENCHMARKS.md ("## N. ..."), each up to the next."""
    marks = list(SECTION_HEADING.finditer(text))
    return {int(m.group(1)): text[m.start():marks[i + 1].start() if i + 1 < len(marks)
                                  else len(text)].rstrip() + "\n"
            for i, m in enumerate(marks)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", default="", help="comma-separated section numbers to measure "
                    "again; the others are kept as BENCHMARKS.md has them")
    ap.add_argument("--output", default=str(ROOT / "BENCHMARKS.md"))
    args = ap.parse_args()
    wanted = {int(n) for n in args.only.split(",") if n} or set(MEASURED)
    sizes = [("real dockerd", "real", 2000, 500), ("stand-in", "standin", 2000, 500),
             ("stand-in", "standin", 20000, 5000), ("stand-in", "standin", 100000, 5000)]
    scrapes, upstream_tags = 100, 1000
    if args.quick:
        sizes, scrapes, upstream_tags = sizes[1:3], 20, 200
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text()
                .splitlines() if ln.startswith("model name")), platform.processor())
    today = datetime.date.today().isoformat()
    output = Path(args.output)
    kept = sections_of(output.read_text()) if output.exists() else {}
    new: dict[int, str] = {}
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        t = Path(tmp)
        if 1 in wanted:
            new[1] = SCRAPE.format(rows="\n".join(scrape_rows(sizes, scrapes, t)))
        if 2 in wanted:
            new[2] = SLOW.format(rows="\n".join(slow_engine_rows(t, scrapes)))
    if 3 in wanted:
        new[3] = UPSTREAM.format(tags=upstream_tags, rows="\n".join(upstream_rows(upstream_tags)))
    if 4 in wanted:
        new[4] = FLEET.format(rows="\n".join(fleet_rows(*((4, 40) if args.quick else (20, 200)))))
    if 6 in wanted:
        from bench.paced import section as paced_section  # it imports this module

        new[6] = paced_section(args.quick)
    if 7 in wanted:
        from bench.registry_cost import section as registry_section

        new[7] = registry_section(args.quick)
    if 8 in wanted:
        from bench.cri_node import section as cri_section

        new[8] = cri_section(args.quick)
    machine = f"{os.cpu_count()} cores ({cpu})"
    sections = {**kept, **{n: f"{text.rstrip()}\n\nMeasured on {today}, {machine}.\n"
                           for n, text in new.items()}}
    text = f"""# Benchmarks

Written by `bench/run.py` (sections 1 to 4 and 6 to 8; `--only 6` measures one again) and
`bench/soak.py` (section 5), last on {machine},
{round(os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30)} GiB, Python
{platform.python_version()}, {platform.platform()}. Each figure is measured in the same run as
its baseline; each section says when it was measured and on which processor (the machine's
processor is not the same every day: compare figures within a section, not across them).

""" + "\n".join(sections[n] for n in sorted(sections))
    output.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
