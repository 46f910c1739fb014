"""Soak: an hour of a host's life, compressed, with everything that goes wrong going wrong.

    .venv/bin/python bench/soak.py               # 10 minutes: an hour at 6x
    .venv/bin/python bench/soak.py --minutes 2   # to try it out

The exporter runs against a real dockerd and two real CNCF registries, with every interval
six times shorter than an hour-long run would need to see the same number of cycles:
engine read every 2.5 s (15 s), disk every 50 s (5 m), drift checked every 10 s, tag lists
and the Docker Hub stand-in read every 20 s. Meanwhile:

- dockerd is killed (SIGKILL, as an OOM kill) and restarted every 90 s;
- one registry goes away for 25 s every 2 minutes (connections refused);
- the other sits behind a proxy that answers 429 (Retry-After: 30) to everything for 40 s
  every 2 minutes: a 429 storm;
- images are pulled (event stream), Prometheus-like scrapes come every second.

Measured: RSS and open file descriptors every 5 s after a warm-up (flat: the highest of the
last 30 % of samples within 10 % of the highest of the first 30 %), and at the end whether
every loop is alive and how many failures each one lived through. Writes section 5 of
BENCHMARKS.md (replacing it when present).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import re
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.hostile import HostileRegistry  # noqa: E402
from tests.services import Dockerd, ExporterProcess, Metrics, Registry  # noqa: E402

SECTION = "## 5. Soak: an hour of failures, compressed"


def proc(pid: int) -> tuple[float, int, int]:
    """(RSS MB, open descriptors, threads) of a process."""
    rss = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text()
               .splitlines() if line.startswith("VmRSS:")) / 1024
    return rss, len(os.listdir(f"/proc/{pid}/fd")), len(os.listdir(f"/proc/{pid}/task"))


def push(d: Dockerd, ref: str, content: str) -> None:
    d.build(ref, "FROM bench-base:1\nCOPY v /v\n", {"v": content})
    d.cli("push", ref)


def run(minutes: float, tmp: Path) -> str:
    scale = minutes / 60 * 6  # 1.0 for the 10-minute run
    d = Dockerd(tmp / "dockerd").start()
    d.make_base_image("bench-base:1")
    flaky = Registry(tmp / "flaky").start()
    stormy_backend = Registry(tmp / "stormy").start()
    stormy = HostileRegistry(stormy_backend.port).start()
    refs = []
    for i in range(5):
        ref = f"{flaky.address}/soak/app{i}:1.{i}.0"
        push(d, ref, f"flaky {i}")
        refs.append(ref)
        backend_ref = f"{stormy_backend.address}/soak/svc{i}:2.{i}.0"
        push(d, backend_ref, f"stormy {i}")
        d.cli("pull", f"{stormy.address}/soak/svc{i}:2.{i}.0")
    for ref in refs[:3]:
        d.cli("run", "-d", "--network", "none", "--name", ref.rsplit("/", 1)[1].split(":")[0],
              ref, "/bin/busybox", "sleep", "100000")
    exp = ExporterProcess([
        "--docker.host", d.host, "--collector.engine.interval", "2500ms",
        "--collector.disk.interval", "50s", "--upstream.interval", "10s",
        "--versions.interval", "20s", "--upstream.timeout", "3s",
        "--upstream.include", "/soak/"], tmp / "exporter.log").start()
    stop = threading.Event()
    scrapes = [0, 0]  # answered, failed

    def scrape() -> None:
        with httpx.Client(timeout=10) as client:
            while not stop.wait(1.0):
                try:
                    client.get(exp.url + "/metrics").raise_for_status()
                    scrapes[0] += 1
                except httpx.HTTPError:
                    scrapes[1] += 1

    def incidents() -> None:
        started = time.monotonic()
        next_kill, next_outage, next_storm = 90 * scale, 120 * scale, 60 * scale
        while not stop.wait(0.5):
            now = time.monotonic() - started
            if now >= next_kill:
                d.kill()
                stop.wait(5 * scale)
                d.start()
                next_kill += 90 * scale
            if now >= next_outage:
                flaky.stop()
                stop.wait(25 * scale)
                flaky.start()
                next_outage += 120 * scale
            if now >= next_storm:
                stormy.mode = "429"
                stop.wait(40 * scale)
                stormy.mode = "pass"
                next_storm += 120 * scale

    def pulls() -> None:
        while not stop.wait(20 * scale):
            # The daemon may be down just now: the next pull counts.
            with contextlib.suppress(Exception):
                d.cli("pull", refs[0], timeout=30)

    workers = [threading.Thread(target=f, daemon=True) for f in (scrape, incidents, pulls)]
    for w in workers:
        w.start()
    samples: list[tuple[float, float, int, int]] = []
    started = time.monotonic()
    warmup = 60 * scale
    try:
        while (elapsed := time.monotonic() - started) < minutes * 60:
            time.sleep(5)
            rss, fds, threads = proc(exp.proc.pid)
            samples.append((elapsed, rss, fds, threads))
        m = Metrics.parse(httpx.get(exp.url + "/metrics", timeout=10).text)
        log = exp.log()
    finally:
        stop.set()
        for w in workers:
            w.join(60)
        exp.stop()
        stormy.stop()
        stormy_backend.stop()
        flaky.stop()
        d.stop()

    after = [s for s in samples if s[0] >= warmup]
    # Flat means no growth: the highest figure of the last 30 % of the samples against the
    # highest of the first 30 %. Descriptors come and go with each request in flight (a
    # scrape, a registry check, the engine's connection), so a single sample is no baseline.
    third = max(1, len(after) * 3 // 10)
    first, last = after[:third], after[-third:]
    loops = sorted({lb["collector"] for lb, _ in m.select("docker_exporter_collector_alive")})
    alive = {c: m.get("docker_exporter_collector_alive", collector=c) for c in loops}
    failures = {c: m.get("docker_exporter_collector_failures_total", collector=c) for c in loops}
    rss = [s[1] for s in after]
    fds = [s[2] for s in after]
    threads = [s[3] for s in after]
    growth = {i: max(x[i] for x in last) / max(x[i] for x in first) for i in (1, 2, 3)}
    within = growth[1] <= 1.1 and growth[2] <= 1.1
    requests = {(lb["registry"], lb["code"]): v
                for lb, v in m.select("docker_registry_requests_total")}
    storm_429 = sum(v for (r, code), v in requests.items() if r == stormy.address and
                    code == "429")
    traces = log.count("Traceback")
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text()
                .splitlines() if ln.startswith("model name")), "processor unknown")
    lines = [
        SECTION, "",
        f"`bench/soak.py --minutes {minutes:g}` on {datetime.date.today()}, {os.cpu_count()} "
        f"cores ({cpu}): {minutes:g} minutes "
        f"of real time, every interval {6 / scale:g} times shorter than in an hour's run, so the "
        "exporter goes through as many cycles as in an hour. A real dockerd killed and "
        f"restarted every {90 * scale:.0f} s, a real registry gone for {25 * scale:.0f} s every "
        f"{120 * scale:.0f} s, another behind a proxy answering 429 (Retry-After 30) for "
        f"{40 * scale:.0f} s every {120 * scale:.0f} s, pulls and a scrape every second. "
        f"Samples every 5 s after a {warmup:.0f} s warm-up ({len(after)} samples).", "",
        "| measure | min | median | max | max, first 30 % | max, last 30 % | last / first |",
        "|---|---|---|---|---|---|---|",
        *[f"| {name} | {fmt.format(min(v))} | {fmt.format(statistics.median(v))} | "
          f"{fmt.format(max(v))} | {fmt.format(max(x[i] for x in first))} | "
          f"{fmt.format(max(x[i] for x in last))} | {growth[i]:.2f} |"
          for i, name, fmt, v in ((1, "RSS MB", "{:.1f}", rss),
                                  (2, "open descriptors", "{:.0f}", fds),
                                  (3, "threads", "{:.0f}", threads))], "",
        "| loop | alive at the end | failed refreshes lived through |", "|---|---|---|",
        *[f"| {c} | {int(alive[c] or 0)} | {int(failures[c] or 0)} |" for c in loops], "",
        f"RSS and descriptors flat (the last 30 % within 10 % of the first): "
        f"**{'yes' if within else 'NO'}**."
        f" Every loop alive: **{'yes' if all(v == 1 for v in alive.values()) else 'NO'}**. "
        f"Scrapes answered: {scrapes[0]}, failed: {scrapes[1]}. 429 answers from the stormy "
        f"registry: {int(storm_429)} in {minutes * 60 / (120 * scale):.0f} storms (the request "
        f"policy leaves it alone for Retry-After). Tracebacks in the log: {traces}.", ""]
    return "\n".join(lines)


def write(section: str) -> None:
    path = ROOT / "BENCHMARKS.md"
    text = path.read_text()
    pattern = re.compile(re.escape(SECTION) + r".*?(?=\n## |\Z)", re.S)
    text = pattern.sub(section.rstrip() + "\n", text) if pattern.search(text) else \
        text.rstrip() + "\n\n" + section
    path.write_text(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--no-write", action="store_true", help="print, don't touch BENCHMARKS.md")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        section = run(args.minutes, Path(tmp))
    print(section)
    if not args.no_write:
        write(section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
