"""Scrapes as Prometheus paces them, CPU when nothing changed, start-up and memory (issue 15).

    .venv/bin/python bench/paced.py            # about 6 minutes on 2 cores
    .venv/bin/python bench/paced.py --quick    # stand-in engine, smaller counts, ~70 s

Back-to-back scrapes flatter a cache: every scrape after the first finds the text ready. Prometheus
scrapes once per interval while the engine is re-read on its own interval, so here the scrapes are
paced (compressed: engine interval 2 s, a scrape every 2 s plus a random phase), sent with the
headers Prometheus sends, and each figure is printed beside its baseline from the same run:

1. paced scrape latency beside back-to-back scrapes, and beside the collect-on-scrape mode;
2. exporter CPU per engine cycle when nothing changed, beside a cycle where one tag changed;
   the exporter's CPU while paced scraping runs;
3. seconds from process start to the first complete result at 50 and 500 tags;
4. resident memory after the paced scrapes.

``section(quick)`` returns the Markdown; ``bench/run.py`` may include it. Loopback traffic only.
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import os
import random
import re
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run import rss_mb  # noqa: E402
from bench.scrape_cost import fill  # noqa: E402
from bench.standin_engine import StandInEngine, standin_process  # noqa: E402
from tests.services import Dockerd, ExporterProcess, Registry, wait_for  # noqa: E402

# What Prometheus 2.4x sends with every scrape (scrape/scrape.go), so that content negotiation
# and compression are those of a real scrape.
PROMETHEUS_HEADERS = {
    "Accept": "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,"
              "application/openmetrics-text;version=0.0.1;q=0.4,"
              "text/plain;version=1.0.0;escaping=allow-utf-8;q=0.3,"
              "text/plain;version=0.0.4;q=0.2,*/*;q=0.1",
    "Accept-Encoding": "gzip",
    "User-Agent": "Prometheus/2.42.0",
    "X-Prometheus-Scrape-Timeout-Seconds": "10",
}
COMMON = ("--upstream.mode", "off", "--hub.enabled", "false")
PACED = ("--collector.engine.interval", "2s", "--collector.disk.interval", "2s")
ON_SCRAPE = ("--collector.on-scrape", "true")
PERIOD, PHASE = 2.0, 0.5  # the compressed 15 s / 15 s: scrape every 2 s, +-0.5 s random phase
CLK_TCK = os.sysconf("SC_CLK_TCK")
SUCCESS = re.compile(r'^docker_exporter_collector_success\{collector="(\w+)"\} 1(\.0)?$', re.M)
IMAGE_LABEL = re.compile(r'^docker_image_info\{[^}]*\bimage="([^"]*)"', re.M)
UPSTREAM_STATUS = re.compile(
    r'^docker_image_upstream_status\{(?=[^}]*\bimage="([^"]*)")(?=[^}]*\bstatus="([^"]*)")'
    r'[^}]*\} 1(\.0)?$', re.M)


# ---------------------------------------------------------------------------------- helpers

def cpu_seconds(pid: int) -> float:
    """utime + stime of the whole process (every thread), from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


@dataclass
class Scrape:
    seconds: float
    wire_bytes: int  # as sent (gzip when the exporter compresses)
    raw_bytes: int
    content_type: str
    images: int  # docker_image_info lines: a scrape that lost its families must not count


def scrape(port: int) -> Scrape:
    """One scrape on a new connection, timed from connect to the last body byte, as a scraper
    sees it; decompressing is left out of the time (Prometheus does it after the read too)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    try:
        started = time.perf_counter()
        conn.request("GET", "/metrics", headers=PROMETHEUS_HEADERS)
        response = conn.getresponse()
        body = response.read()
        seconds = time.perf_counter() - started
    finally:
        conn.close()
    if response.status != 200:
        raise RuntimeError(f"scrape answered {response.status}: {body[:200]!r}")
    raw = gzip.decompress(body) if response.getheader("Content-Encoding") == "gzip" else body
    return Scrape(seconds, len(body), len(raw), response.getheader("Content-Type", ""),
                  raw.count(b"docker_image_info{"))


def paced(port: int, n: int, rng: random.Random) -> list[Scrape]:
    """``n`` scrapes on a fixed 2 s grid, each moved by a uniform random phase of +-0.5 s, so
    they land anywhere relative to the engine loop's refreshes, as Prometheus's do."""
    start = time.monotonic() + PERIOD
    out = []
    for i in range(n):
        at = start + i * PERIOD + rng.uniform(-PHASE, PHASE)
        time.sleep(max(0.0, at - time.monotonic()))
        out.append(scrape(port))
    return out


def back_to_back(port: int, n: int) -> list[Scrape]:
    """The flattering baseline: the same scrapes with no pause between them."""
    return [scrape(port) for _ in range(n)]


def summary(scrapes: list[Scrape]) -> dict[str, float]:
    ms = [s.seconds * 1000 for s in scrapes]
    return {"median": statistics.median(ms), "max": max(ms), "n": len(ms),
            "wire_kb": scrapes[-1].wire_bytes / 1000, "raw_kb": scrapes[-1].raw_bytes / 1000}


def complete(text: str, tags: int | set[str], collectors: tuple[str, ...]) -> bool:
    """Every tag has its docker_image_info line and every named collector says success 1."""
    ok = set(m.group(1) for m in SUCCESS.finditer(text))
    if not all(c in ok for c in collectors):
        return False
    if isinstance(tags, int):
        return text.count("docker_image_info{") >= tags
    return tags <= set(IMAGE_LABEL.findall(text))


def start_complete(host: str, tags: int, log: Path, *extra: str) -> ExporterProcess:
    """Start the exporter and wait until it has read every tag and /system/df."""
    exp = ExporterProcess(["--docker.host", host, *COMMON, *extra], log).start()
    try:
        wait_for(lambda: complete(httpx.get(exp.url + "/metrics", timeout=300).text, tags,
                                  ("engine", "disk")),
                 900, "the exporter to see every tag", interval=0.5)
    except BaseException:
        exp.stop()
        raise
    return exp


class EngineReads:
    """Counts the exporter's engine cycles from outside it (it exports no refresh counter):
    each cycle lists images once. A real dockerd run with --debug logs every API call; the
    stand-in engine looks each request's path up in its ``delays`` map, which this counts."""

    def __init__(self, dockerd: Dockerd | None = None,
                 standin: StandInEngine | None = None) -> None:
        self.log = dockerd.root / "dockerd.log" if dockerd else None
        self.counts: dict[str, int] = {}
        if standin is not None:
            counts = self.counts

            class Counting(dict):
                def get(self, key: str, default: float = 0.0) -> float:  # type: ignore[override]
                    counts[key] = counts.get(key, 0) + 1
                    return super().get(key, default)

            standin.delays = Counting(standin.delays)

    def mark(self) -> int:
        if self.log is not None:
            return self.log.stat().st_size
        return self.counts.get("/images/json", 0)

    def since(self, mark: int) -> int:
        if self.log is not None:
            with self.log.open("rb") as f:
                f.seek(mark)
                return len(re.findall(rb'Calling GET /v[\d.]+/images/json', f.read()))
        return self.counts.get("/images/json", 0) - mark


# ------------------------------------------------------------------- 1 and 4: paced scrapes

@dataclass
class ScrapeRun:
    label: str
    tags: int
    containers: int
    mode: str
    paced: dict[str, float]
    b2b: dict[str, float]
    cpu_pct: float  # of one core, over the paced scrapes
    rss_mb: float  # right after the paced scrapes
    content_type: str


def scrape_runs(label: str, host: str, tags: int, containers: int, n: int, n_base: int,
                tmp: Path, rng: random.Random, ours: str = "ours") -> list[ScrapeRun]:
    """The exporter as shipped (named ``ours``), then the collect-on-scrape baseline unless
    ``n_base`` is 0, against one engine."""
    runs = []
    modes = (("ours", PACED, n), ("on-scrape", (*PACED, *ON_SCRAPE), n_base))
    for mode, extra, count in modes[:1 if n_base == 0 else 2]:
        mode = ours if mode == "ours" else mode
        exp = start_complete(host, tags, tmp / f"{mode}-{tags}.log", *extra)
        try:
            assert exp.proc is not None
            time.sleep(PERIOD)  # let the first refresh's garbage and the start-up settle
            cpu0, t0 = cpu_seconds(exp.proc.pid), time.monotonic()
            p = paced(exp.port, count, rng)
            cpu_pct = 100 * (cpu_seconds(exp.proc.pid) - cpu0) / (time.monotonic() - t0)
            rss = rss_mb(exp.proc.pid)
            b = back_to_back(exp.port, count)
        finally:
            exp.stop()
        if min(s.images for s in p + b) < tags:
            raise RuntimeError(f"{label} {mode}: a scrape lacked tags: "
                               f"{sorted(set(s.images for s in p + b))}")
        runs.append(ScrapeRun(label, tags, containers, mode, summary(p), summary(b), cpu_pct,
                              rss, p[-1].content_type))
        print(f"  {label} {tags} {mode}: paced {runs[-1].paced}, back-to-back {runs[-1].b2b}, "
              f"cpu {cpu_pct:.1f}%, rss {rss:.0f} MB", file=sys.stderr, flush=True)
    return runs


def verdict(ok: bool) -> str:
    return "met" if ok else "**not met**"


def scrape_target(run: ScrapeRun) -> str:
    if run.mode != "ours":
        return ""
    if run.label == "real dockerd" and run.tags == 2000:
        return (f"median <= 10, max <= 50: "
                f"{verdict(run.paced['median'] <= 10 and run.paced['max'] <= 50)}")
    if run.tags >= 20000:
        return f"median <= 60: {verdict(run.paced['median'] <= 60)}"
    return ""


def scrape_table(runs: list[ScrapeRun]) -> str:
    rows = ["| engine | tags | containers | exporter | scrapes | paced median ms | paced max ms "
            "| back-to-back median ms | back-to-back max ms | body kB gzip | body kB raw "
            "| target (paced) |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        rows.append(f"| {r.label} | {r.tags:,} | {r.containers:,} | {r.mode} | {r.paced['n']} "
                    f"| {r.paced['median']:.1f} | {r.paced['max']:.1f} | {r.b2b['median']:.1f} "
                    f"| {r.b2b['max']:.1f} | {r.paced['wire_kb']:,.0f} | {r.paced['raw_kb']:,.0f} "
                    f"| {scrape_target(r)} |")
    return "\n".join(rows)


# --------------------------------------------------------------- 2: CPU per engine cycle

def churn(dockerd: Dockerd | None, standin: StandInEngine | None,
          stop: threading.Event) -> None:
    """Every second, add or remove one tag, so that every engine read sees a change."""
    if dockerd is not None:
        transport = httpx.HTTPTransport(uds=str(dockerd.socket))
        with httpx.Client(transport=transport, base_url="http://docker/v1.41", timeout=30) as api:
            added = False
            while not stop.wait(1.0):
                if added:
                    api.delete("/images/bench/churn:x", params={"noprune": "1"})
                else:
                    api.post("/images/bench/img0:t0/tag", params={"repo": "bench/churn",
                                                                  "tag": "x"})
                added = not added
    elif standin is not None:
        standin.churn(stop)


def cycle_cost(host: str, tags: int, reads: EngineReads, window: float, tmp: Path,
               change: Callable[[threading.Event], None] | None) -> dict[str, float]:
    """Exporter CPU over ``window`` seconds with no scrape, divided by the engine reads in it.

    The engine interval is 1 s and /system/df is read once an hour here, so the window holds
    engine cycles only; the events stream, the state store and the interpreter's own threads
    are in the process CPU too, so the figure is an upper bound for the engine loop alone."""
    exp = start_complete(host, tags, tmp / f"cycle-{tags}-{change is not None}.log",
                         "--collector.engine.interval", "1s", "--collector.disk.interval", "1h")
    stop = threading.Event()
    try:
        assert exp.proc is not None
        if change is not None:
            threading.Thread(target=change, args=(stop,), daemon=True).start()
        time.sleep(3)  # the scrape that proved completeness and start-up work are over
        mark, cpu0, t0 = reads.mark(), cpu_seconds(exp.proc.pid), time.monotonic()
        time.sleep(window)
        cpu, wall, cycles = cpu_seconds(exp.proc.pid) - cpu0, time.monotonic() - t0, \
            reads.since(mark)
    finally:
        stop.set()
        exp.stop()
    return {"cpu_s": cpu, "wall_s": wall, "cycles": cycles,
            "ms_per_cycle": 1000 * cpu / max(1, cycles), "cpu_pct": 100 * cpu / wall}


# ------------------------------------------------------------- 3: time to first complete

def fill_from_registry(d: Dockerd, reg: Registry, tags: int) -> set[str]:
    """``tags`` local tags, 10 per repository, each repository's image pushed to the local
    registry so that its tags carry a RepoDigest there, as pulled images do: one docker push
    per repository, the other nine tags PUT as the same manifest and tagged locally."""
    base = d.make_base_image("bench-base:1")
    api = httpx.Client(transport=httpx.HTTPTransport(uds=str(d.socket)),
                       base_url="http://docker/v1.41", timeout=120)
    manifest_type = "application/vnd.docker.distribution.manifest.v2+json"
    names = set()
    with api, httpx.Client(base_url=f"http://{reg.address}", timeout=60) as registry:
        for r in range(max(1, tags // 10)):
            repo = f"{reg.address}/bench/u{r}"
            api.post(f"/images/{base}/tag", params={"repo": repo, "tag": "t0"}
                     ).raise_for_status()
            d.cli("push", f"{repo}:t0")
            manifest = registry.get(f"/v2/bench/u{r}/manifests/t0",
                                    headers={"Accept": manifest_type})
            manifest.raise_for_status()
            names.add(f"{repo}:t0")
            for t in range(1, 10):
                registry.put(f"/v2/bench/u{r}/manifests/t{t}", content=manifest.content,
                             headers={"Content-Type": manifest_type}).raise_for_status()
                api.post(f"/images/{base}/tag", params={"repo": repo, "tag": f"t{t}"}
                         ).raise_for_status()
                names.add(f"{repo}:t{t}")
    d.cli("rmi", "bench-base:1")
    return names


def decided(text: str) -> set[str]:
    """Images whose upstream state is decided (current, drifted or platform_unchanged)."""
    return {m.group(1) for m in UPSTREAM_STATUS.finditer(text) if m.group(2) != "unknown"}


def first_complete(host: str, expected: set[str], log: Path, upstream: bool,
                   *extra: str) -> float:
    """Seconds from spawning the process until one scrape holds every tag's
    docker_image_info line and success 1 from the engine and disk collectors (and, with
    upstream checks on, from the upstream collector, with every tag's state decided),
    polling every 25 ms."""
    mode = ("--upstream.mode", "local", "--hub.enabled", "false") if upstream else COMMON
    collectors = ("engine", "disk", "upstream") if upstream else ("engine", "disk")
    exp = ExporterProcess(["--docker.host", host, *mode, *PACED, *extra], log)
    started = time.monotonic()
    exp.start(wait_ready=False)
    try:
        with httpx.Client(timeout=60) as client:
            while time.monotonic() - started < 300:
                assert exp.proc is not None
                if exp.proc.poll() is not None:
                    raise RuntimeError(f"exporter exited: {exp.log()[-2000:]}")
                try:
                    text = client.get(exp.url + "/metrics").text
                except httpx.TransportError:
                    text = ""
                if complete(text, expected, collectors) and \
                        (not upstream or expected <= decided(text)):
                    return time.monotonic() - started
                time.sleep(0.025)
    finally:
        exp.stop()
    raise TimeoutError("the exporter never had a complete result")


STARTUP_HEADER = ("| tags | ours median s | ours max s | on-scrape median s | on-scrape max s "
                  "| ours with upstream checks median s | max s "
                  "| What's Up Docker s (reference) | target |\n"
                  "|---|---|---|---|---|---|---|---|---|")


def startup_rows(sizes: list[int], repeats: int, tmp: Path) -> list[str]:
    rows = []
    reference = {50: "5.3", 500: "10.4"}
    for tags in sizes:
        d = Dockerd(tmp / f"start-{tags}").start()
        reg = Registry(tmp / f"registry-{tags}").start()
        try:
            expected = fill_from_registry(d, reg, tags)
            result = {}
            for mode, upstream, extra in (("ours", False, ()), ("on-scrape", False, ON_SCRAPE),
                                          ("upstream", True, ())):
                result[mode] = sorted(
                    first_complete(d.host, expected, tmp / f"s-{mode}-{i}.log", upstream,
                                   *extra) for i in range(repeats))
        finally:
            d.stop()
            reg.stop()
        ours, base, up = result["ours"], result["on-scrape"], result["upstream"]
        target = f"< 1 s: {verdict(statistics.median(ours) < 1)}" if tags == 50 else ""
        rows.append(f"| {tags:,} | {statistics.median(ours):.2f} | {ours[-1]:.2f} "
                    f"| {statistics.median(base):.2f} | {base[-1]:.2f} "
                    f"| {statistics.median(up):.2f} | {up[-1]:.2f} "
                    f"| {reference.get(tags, '')} | {target} |")
        print("  " + rows[-1], file=sys.stderr, flush=True)
    return rows


# ---------------------------------------------------------------------------------- section

def section(quick: bool) -> str:
    """The Markdown section: a short paragraph and a table per measure."""
    rng = random.Random(15)
    n, n_base, window = (10, 5, 10.0) if quick else (40, 10, 20.0)
    with tempfile.TemporaryDirectory(prefix="bench-paced-") as tmp_name:
        tmp = Path(tmp_name)
        runs: list[ScrapeRun] = []
        if quick:
            engine = StandInEngine(tmp / "standin-2000.sock", 2000, 500)
            reads = EngineReads(standin=engine)
            try:
                runs += scrape_runs("stand-in", engine.host, 2000, 500, n, n_base, tmp, rng)
                quiet = cycle_cost(engine.host, 2000, reads, window, tmp, None)
                busy = cycle_cost(engine.host, 2000, reads, window, tmp,
                                  lambda stop: churn(None, engine, stop))
            finally:
                engine.stop()
            cycle_engine = "stand-in engine"
            startup_sizes = [50]
            startup = startup_rows(startup_sizes, 1, tmp)
        else:
            d = Dockerd(tmp / "d-2000", args=("--debug",)).start()
            try:
                d.make_base_image("bench-base:1")
                fill(d, 2000, 500, tags_per_image=10)
                reads = EngineReads(dockerd=d)
                runs += scrape_runs("real dockerd", d.host, 2000, 500, n, n_base, tmp, rng)
                quiet = cycle_cost(d.host, 2000, reads, window, tmp, None)
                busy = cycle_cost(d.host, 2000, reads, window, tmp,
                                  lambda stop: churn(d, None, stop))
            finally:
                d.stop()
            cycle_engine = "real dockerd (cycles counted in its --debug log)"
            # In a process of its own: serving 20,000 tags' JSON every 2 s from this one
            # would hold the interpreter lock the timed scrapes need.
            with standin_process(tmp / "standin-20000.sock", 20000, 5000) as host:
                runs += scrape_runs("stand-in", host, 20000, 5000, n, n_base, tmp, rng)
            # Whether rendering only the changed images' lines would pay: every engine read
            # here sees a change, so every one re-renders the image and container families.
            with standin_process(tmp / "churn-20000.sock", 20000, 5000, churn=True) as host:
                runs += scrape_runs("stand-in", host, 20000, 5000, n, 0, tmp, rng,
                                    "ours, a tag changing every second")
            startup_sizes = [50, 500]
            startup = startup_rows(startup_sizes, 3, tmp)
    content_type = runs[0].content_type
    churn_note = "" if quick else """"a tag changing every second" adds or removes one tag on
the stand-in every second, so every engine read publishes a new snapshot and the renderer
formats the image and container families again (a whole re-render, about 0.4 s of CPU at
20,000 tags), while the scrapes go on: what rendering only the changed image's lines would
save a scrape.
"""
    cycle_rows = [
        f"| nothing changed | {quiet['cycles']} in {quiet['wall_s']:.0f} s "
        f"| {quiet['ms_per_cycle']:.1f} | {quiet['cpu_pct']:.1f} "
        f"| <= 20 ms: {verdict(quiet['ms_per_cycle'] <= 20)} |",
        f"| one tag added or removed every second (baseline) | {busy['cycles']} in "
        f"{busy['wall_s']:.0f} s | {busy['ms_per_cycle']:.1f} | {busy['cpu_pct']:.1f} | |"]
    cpu_rows = [f"| {r.label} | {r.tags:,} | {r.mode} | {r.paced['n']} | {r.cpu_pct:.1f} |"
                for r in runs]
    rss_rows = [f"| {r.label} | {r.tags:,} | {r.mode} | {r.rss_mb:.0f} | "
                + (f"<= 60: {verdict(r.rss_mb <= 60)}" if r.mode == "ours" and r.tags == 2000
                   and r.label == "real dockerd" else "") + " |" for r in runs]
    sizes = "2,000 tags and 500 containers on the stand-in engine" if quick else \
        "2,000 tags and 500 containers on a real dockerd, 20,000 tags and 5,000 containers " \
        "on the stand-in engine (bench/standin_engine.py, in a process of its own)"
    return f"""## 6. Paced scrapes, work when nothing changed, start-up, memory

Written by `bench/paced.py{' --quick' if quick else ''}`. Every figure is from one run, each
beside its baseline from the same run.

### Scrapes as Prometheus paces them

Engines: {sizes}.
Both collectors refresh every 2 s (`--collector.engine.interval 2s
--collector.disk.interval 2s`, upstream checks off) and a scrape comes every 2 s plus a
uniform random phase of +-0.5 s: Prometheus's 15 s / 15 s default, compressed, so a scrape
lands anywhere relative to the engine reads. Each scrape opens a new connection and sends
Prometheus's `Accept` (OpenMetrics preferred) and `Accept-Encoding: gzip`; the answer was
`{content_type}`.
Time runs from connect to the last body byte. "back-to-back" is the same scrapes with no
pause, in the same process right after the paced ones; "on-scrape" is
`--collector.on-scrape true` (reads the engine during every scrape), {n_base} scrapes.
{churn_note}
{scrape_table(runs)}

### CPU per engine cycle with nothing changed

2,000 tags and 500 containers on a {cycle_engine};
engine interval 1 s, `/system/df` once an hour, no scrapes during a {window:.0f} s window.
Exporter CPU (utime + stime of every thread, `/proc/PID/stat`, 10 ms ticks) divided by the
engine reads counted at the engine (`GET /images/json`, one per cycle). The events stream,
the state store and the interpreter are in the process CPU too, so this is an upper bound
for the engine loop. The baseline adds or removes one tag every second, so nearly every
read sees a change.

| engine state | engine cycles | CPU ms per cycle | CPU % of one core | target |
|---|---|---|---|---|
{chr(10).join(cycle_rows)}

Exporter CPU while the paced scrapes above ran (engine and disk read every 2 s, a scrape
every ~2 s), as % of one core:

| engine | tags | exporter | paced scrapes | CPU % of one core |
|---|---|---|---|---|
{chr(10).join(cpu_rows)}

### Time from start to the first complete result

A real dockerd with {" and ".join(f"{t:,}" for t in startup_sizes)} local tags,
10 per repository, each repository pushed to a local CNCF Distribution registry so that the tags
carry its RepoDigest, as pulled images do. The clock starts when the process is spawned;
`/metrics` is polled every 25 ms until one scrape is complete. Without upstream checks
(`--upstream.mode off`) "complete" means a `docker_image_info` line for every tag and
`docker_exporter_collector_success` 1 for `engine` and `disk`; with them (`--upstream.mode
local`, the default, versions on), also success 1 for `upstream` and every tag's
`docker_image_upstream_status` decided (not `unknown`). Median and maximum of
{"one start" if quick else "3 starts"} each. What's Up Docker's figures are from issue 15
(its own start to a complete result, registry checks included), not measured here.

{STARTUP_HEADER}
{chr(10).join(startup)}

### Resident memory after the paced scrapes

`VmRSS` of the exporter process right after its paced scrapes.

| engine | tags | exporter | RSS MB | target |
|---|---|---|---|---|
{chr(10).join(rss_rows)}
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="stand-in engine, fewer scrapes")
    args = ap.parse_args()
    started = time.monotonic()
    text = section(args.quick)
    print(text)
    print(f"(took {time.monotonic() - started:.0f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
