"""Section 8: a Kubernetes node read through CRI (a real containerd 1.6 with its CRI plugin).

    .venv/bin/python bench/cri_node.py [--images 1000] [--quick]

What a node costs the exporter, each figure beside its baseline in the same run:

- a read of the node in-process (``CriReader.read``): the first (every image's build time
  and every container's reference asked once) beside the reads after it, unchanged (the
  last snapshot given back) and with one image pulled in between;
- the exporter as a process (``--cri.endpoint``): its memory on the same node when empty
  and when full, and its CPU per second at the default interval's pace.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from exporter.sources.cri import Cri, CriReader  # noqa: E402
from tests.containerd import Containerd, cri, push_busybox  # noqa: E402
from tests.services import ExporterProcess, Registry, wait_for  # noqa: E402

PODS = 20


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _exporter(node: Containerd, log: Path, want: int) -> tuple[float, float]:
    """RSS (MB) once the node's images are all exported, and CPU ms per second over 30 s
    at a 1 s engine interval (the default is 15 s)."""
    exp = ExporterProcess(["--cri.endpoint", node.endpoint, "--collector.engine.interval",
                           "1s", "--upstream.mode", "off", "--versions.enabled", "false"],
                          log).start()
    try:
        assert exp.proc is not None
        def complete() -> bool:
            m = exp.scrape()
            return m.get("docker_up") == 1 and len(m.select("docker_image_size_bytes")) >= want
        wait_for(complete, 120, f"{want} images exported")
        time.sleep(3)
        before, started = _cpu_s(exp.proc.pid), time.monotonic()
        time.sleep(30)
        cpu = (_cpu_s(exp.proc.pid) - before) / (time.monotonic() - started) * 1000
        return _rss_mb(exp.proc.pid), cpu
    finally:
        exp.stop()


def _reads(node: Containerd, registry: str) -> dict[str, tuple[float, float]]:
    """CPU and wall ms of a first read, of unchanged reads, and of reads after a pull."""
    api = Cri(node.endpoint, 60.0)
    reader = CriReader(api)
    try:
        def timed() -> tuple[float, float]:
            cpu, wall = time.process_time(), time.perf_counter()
            reader.read()
            return (time.process_time() - cpu) * 1000, (time.perf_counter() - wall) * 1000
        first = timed()
        unchanged = [timed() for _ in range(20)]
        pulled = []
        for n in range(5):
            push_busybox(registry, "bench/moving", "1", f"2025-03-0{n + 1}T00:00:00Z",
                         f"moving {n}")
            node.pull(f"{registry}/bench/moving:1")
            pulled.append(timed())
        def median(runs: list[tuple[float, float]]) -> tuple[float, float]:
            return (statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs))
        return {"first": first, "unchanged": median(unchanged), "pulled": median(pulled)}
    finally:
        api.close()


def section(quick: bool = False, images: int = 1000) -> str:
    images = 100 if quick else images
    with tempfile.TemporaryDirectory(prefix="bench-cri-") as tmp:
        root = Path(tmp)
        registry = Registry(root / "registry").start()
        node = Containerd(root / "node", registry.address)
        try:
            node.start()
            empty_rss, empty_cpu = _exporter(node, root / "empty.log", 0)

            def pull(n: int) -> None:
                push_busybox(registry.address, f"bench/app{n % 50}", f"v{n}",
                             "2025-01-01T00:00:00Z", f"image {n}")
                node.pull(f"{registry.address}/bench/app{n % 50}:v{n}")

            started = time.monotonic()
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(pull, range(images)))
            pulled_in = time.monotonic() - started
            for n in range(PODS):
                node.run_pod("bench", f"app-{n}", {"app": f"{registry.address}/bench/app{n}:v{n}"})
            reads = _reads(node, registry.address)
            total = len(node.images.ListImages(cri.ListImagesRequest()).images)
            full_rss, full_cpu = _exporter(node, root / "full.log", total)
        finally:
            node.stop()
            registry.stop()
    rows = "\n".join(f"| {name} | {cpu:.1f} | {wall:.1f} |" for name, (cpu, wall) in (
        ("first read (every build time and container reference asked)", reads["first"]),
        ("unchanged (median of 20): the last snapshot given back", reads["unchanged"]),
        ("after one pull (median of 5): one new image asked", reads["pulled"])))
    return f"""## 8. A Kubernetes node through CRI

Written by `bench/cri_node.py`: a real containerd 1.6.20 with its CRI plugin and a real
CNCF Distribution registry; {images} images pulled through CRI's `PullImage` ({pulled_in:.0f} s,
8 at a time; {total} images in all with the pause image and those below) and {PODS} pods of
one container each, created as the kubelet creates them.

### One read of the node, in-process (`CriReader.read`)

| read | CPU ms | wall ms |
|---|---|---|
{rows}

### The exporter as a process (`--cri.endpoint`, engine read every 1 s)

| node | RSS MB | CPU ms per second |
|---|---|---|
| empty (no image) | {empty_rss:.1f} | {empty_cpu:.1f} |
| {total} images, {PODS} pods | {full_rss:.1f} | {full_cpu:.1f} |

At the default `collector.engine.interval` of 15 s the engine and disk reads come 15 times
less often. `deploy/kubernetes/daemonset.yaml` limits the pod to 128 MiB.
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    print(section(args.quick, args.images))


if __name__ == "__main__":
    main()
