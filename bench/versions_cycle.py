"""What looking for newer versions costs, counted at a real registry.

    .venv/bin/python bench/versions_cycle.py --repos 20 --versions 60 --other-tags 400

A private dockerd pulls ``1.0.0`` of --repos repositories from a real registry (CNCF
Distribution); each repository also holds --versions newer version tags (distinct images,
pushed over HTTP) and --other-tags tags that are not versions (CI builds, signatures). The
exporter runs with the drift check every 2 s; the script counts, by the exporter's
User-Agent in the registry's access log, the requests of the first cycle, of the next
cycles (the tag lists are kept for versions.interval), and after a restart on the same
state file.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.registries import (
    get_manifest,
    push_variant,
    put_cosign_signature,
    registry_requests,
)
from tests.services import Dockerd, ExporterProcess, Registry, wait_for


def kinds(counts: Counter[tuple[str, str]]) -> dict[str, int]:
    out: Counter[str] = Counter()
    for (method, path), n in counts.items():
        kind = ("tags/list" if "/tags/list" in path else "referrers" if "/referrers/" in path
                else "blob" if "/blobs/" in path else "manifest" if "/manifests/" in path
                else "other")
        out[f"{method} {kind}"] += n
    return dict(sorted(out.items()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repos", type=int, default=20)
    ap.add_argument("--versions", type=int, default=60)
    ap.add_argument("--other-tags", type=int, default=400)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-versions-") as tmp:
        root = Path(tmp)
        reg = Registry(root / "registry").start()
        d = Dockerd(root / "dockerd").start()
        try:
            d.make_base_image("hygiene-base:1")
            arch = d.arch()
            started = time.monotonic()
            for r in range(args.repos):
                name = f"bench/app{r:03d}"
                ref = f"{reg.address}/{name}:1.0.0"
                d.build(ref, "FROM hygiene-base:1\nCOPY v /v\n", {"v": name})
                d.cli("push", ref)
                base = get_manifest(reg.address, name, "1.0.0")
                for v in range(args.versions):
                    push_variant(reg.address, name, f"1.{v // 10 + 1}.{v % 10}", base,
                                 f"2026-{v % 12 + 1:02d}-01T00:00:00Z", arch)
                body = httpx.Request("PUT", "http://x", json=base).content
                with httpx.Client() as client:
                    for t in range(args.other_tags):
                        client.put(f"http://{reg.address}/v2/{name}/manifests/ci-{t:05d}",
                                   content=body, headers={"Content-Type": base["mediaType"]}
                                   ).raise_for_status()
                r_head = httpx.head(f"http://{reg.address}/v2/{name}/manifests/1.0.0",
                                    headers={"Accept": base["mediaType"]})
                put_cosign_signature(reg.address, name, r_head.headers["docker-content-digest"])
            print(f"set-up: {args.repos} repositories x ({args.versions} versions + "
                  f"{args.other_tags} other tags) in {time.monotonic() - started:.0f}s")

            state = root / "state.db"
            cmd = ["--docker.host", d.host, "--upstream.interval", "2s",
                   "--collector.engine.interval", "1s", "--collector.disk.interval", "1h",
                   "--state.path", str(state), "--upstream.include", f"^{reg.address}/bench/"]

            def all_done(m) -> bool:
                return (len(m.select("docker_image_versions_behind")) == args.repos
                        and len(m.select("docker_image_upstream_signed")) == args.repos)

            before = registry_requests(reg)
            exp = ExporterProcess(cmd, root / "exporter.log").start()
            t0 = time.monotonic()
            m = wait_for(lambda: (lambda m: m if all_done(m) else None)(exp.scrape()), 300,
                         "every repository's versions", interval=0.2)
            first_s = time.monotonic() - t0
            time.sleep(1)
            first = registry_requests(reg) - before
            behind = {lb["image"]: v for lb, v in m.select("docker_image_versions_behind")}
            duration = m.get("docker_exporter_collector_duration_seconds", collector="versions")
            time.sleep(10)  # five more cycles of both loops
            later = registry_requests(reg) - before - first
            exp.stop()
            before = registry_requests(reg)
            exp = ExporterProcess(cmd, root / "exporter-2.log").start()
            wait_for(lambda: all_done(exp.scrape()), 120, "versions after a restart",
                     interval=0.2)
            time.sleep(1)
            restart = registry_requests(reg) - before
            exp.stop()
        finally:
            d.stop()
            reg.stop()
    per_repo = args.versions + args.other_tags + 3
    print(f"machine: {platform.machine()}, {platform.python_version()}")
    print(f"tags per repository: {per_repo}; versions_behind: {sorted(set(behind.values()))}")
    print(f"first cycle: {first_s:.1f}s to every series (versions collector "
          f"{duration:.2f}s): {kinds(first)}")
    print(f"next 10 s (about five cycles): {kinds(later) or 'no request'}")
    print(f"restart on the same state file: {kinds(restart)}")


if __name__ == "__main__":
    main()
