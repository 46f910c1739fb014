"""Fleet: 20 exporters watching the same 200 tags, with and without fleet mode.

    .venv/bin/python bench/fleet.py --hosts 20 --tags 200

Every host is a stand-in engine serving the same images, whose tags and RepoDigests are
real ones in a real registry. Without fleet mode each exporter checks its own tags; with
it the hosts run --upstream.mode=off and one central checker checks each tag once.
Requests are counted at the registry (access log, the exporter's User-Agent), per cycle.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.standin_engine import StandInEngine
from tests.registries import access_log
from tests.services import Dockerd, ExporterProcess, Registry, wait_for

V2 = "application/vnd.docker.distribution.manifest.v2+json"


def publish(d: Dockerd, reg: Registry, tags: int, repos: int) -> list[tuple[str, list[str],
                                                                             str]]:
    """Push one image to each repository and name it with tags/repos tags there; returns
    the local images a host that pulled them would have (ID, tags, repo digest)."""
    d.build("fleet-src:1", "FROM fleet-base:1\nCOPY v /v\n", {"v": "fleet"})
    out = []
    for r in range(repos):
        repo = f"fleet/r{r}"
        d.cli("tag", "fleet-src:1", f"{reg.address}/{repo}:t0")
        d.cli("push", f"{reg.address}/{repo}:t0")
        body = httpx.get(f"http://{reg.address}/v2/{repo}/manifests/t0",
                         headers={"Accept": V2}).content
        refs = [f"{reg.address}/{repo}:t0"]
        for t in range(1, tags // repos):
            httpx.put(f"http://{reg.address}/v2/{repo}/manifests/t{t}", content=body,
                      headers={"Content-Type": V2}).raise_for_status()
            refs.append(f"{reg.address}/{repo}:t{t}")
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        out.append((f"sha256:{r:064x}", refs, f"{reg.address}/{repo}@{digest}"))
    return out


def cycle(reg: Registry, exporters: list[ExporterProcess], tags: int) -> int:
    """HEADs counted at the registry until every exporter finished one cycle."""
    before = access_log(reg)
    for exp in exporters:
        exp.start()
    try:
        for exp in exporters:
            if "off" in exp.args:
                continue  # hosts in fleet mode ask no registry
            try:
                wait_for(lambda exp=exp: exp.scrape().get("docker_exporter_collector_success",
                                                          collector="upstream") == 1,
                         300, "a cycle")
            except TimeoutError:
                raise RuntimeError(exp.log()[-2000:]) from None
        time.sleep(1)
        return (access_log(reg) - before)[("HEAD", "manifest")]
    finally:
        for exp in exporters:
            exp.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--hosts", type=int, default=20)
    ap.add_argument("--tags", type=int, default=200)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
        root = Path(tmp)
        reg = Registry(root / "registry").start()
        d = Dockerd(root / "d").start()
        engines = []
        try:
            d.make_base_image("fleet-base:1")
            pulled = publish(d, reg, args.tags, 10)
            engines = [StandInEngine(root / f"h{i}.sock", 0, 10, pulled=pulled)
                       for i in range(args.hosts)]
            common = ["--upstream.interval", "1h", "--hub.enabled", "false",
                      "--events.enabled", "false", "--collector.disk.interval", "1h"]
            local = [ExporterProcess(["--docker.host", e.host, *common],
                                     root / f"local{i}.log") for i, e in enumerate(engines)]
            without = cycle(reg, local, args.tags)
            refs = [r for _, refs, _ in pulled for r in refs]
            (root / "refs.yml").write_text("upstream:\n  references:\n" +
                                           "".join(f"    - {r}\n" for r in refs))
            central = ExporterProcess(["--docker.host", f"unix://{root}/none.sock",
                                       "--upstream.mode", "central", "--config.file",
                                       str(root / "refs.yml"), *common], root / "central.log")
            hosts_off = [ExporterProcess(["--docker.host", e.host, "--upstream.mode", "off",
                                          *common], root / f"off{i}.log")
                         for i, e in enumerate(engines)]
            with_fleet = cycle(reg, [central, *hosts_off], 0)
        finally:
            for e in engines:
                e.stop()
            d.stop()
            reg.stop()
    distinct = len(refs)
    print(f"| {args.hosts} exporters, local mode | {distinct} | {without} | "
          f"{without / distinct:.1f} |")
    print(f"| {args.hosts} exporters off + 1 central checker (fleet mode) | {distinct} | "
          f"{with_fleet} | {with_fleet / distinct:.1f} |")


if __name__ == "__main__":
    main()
