"""One upstream check cycle against a real registry with bearer-token auth.

    .venv/bin/python bench/upstream_cycle.py --tags 200

Pushes one image to --repos repositories and names it with --tags tags in all, pulls
nothing; then runs the exporter once at the default concurrency and once at concurrency 1,
and once more after 10 % of the tags moved on. Requests are counted at the registry (its
access log, by the exporter's User-Agent) and at the token server.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.registries import FaultProxy, TokenServer, access_log, start_token_registry
from tests.services import Dockerd, ExporterProcess

USER, PASSWORD = "bench", "bench-pass"


def token(tokens: TokenServer, repo: str) -> dict[str, str]:
    return {"Authorization": "Bearer " + tokens.issue(USER, [f"repository:{repo}:pull,push"])}


def run_cycle(d: Dockerd, reg_address: str, tokens: TokenServer, state: Path, log: Path,
              tags: int, *extra: str) -> dict[str, float]:
    before, tok_before = access_log_of(reg_address), sum(tokens.requests.values())
    started = time.monotonic()
    exp = ExporterProcess(["--docker.host", d.host, "--upstream.interval", "1h",
                           "--collector.disk.interval", "1h", "--state.path", str(state),
                           "--docker.config", str(d.root / "client-config" / "config.json"),
                           "--upstream.include", f"^{reg_address}/bench", *extra], log).start()
    try:
        def done():
            m = exp.scrape()
            ok = m.get("docker_exporter_collector_success", collector="upstream")
            states = [v for lb, v in m.select("docker_image_upstream_status") if v == 1]
            return m if ok == 1 and len(states) >= tags else None
        from tests.services import wait_for
        m = wait_for(done, 600, "a full cycle", interval=0.1)
        took = time.monotonic() - started
        time.sleep(0.5)
        counts = access_log_of(reg_address) - before
        return {"cycle_s": took,
                "head": counts[("HEAD", "manifest")], "get": counts[("GET", "manifest")],
                "token": sum(tokens.requests.values()) - tok_before,
                "drifted": sum(1 for lb, v in m.select("docker_image_upstream_status",
                                                       status="drifted") if v == 1)}
    finally:
        exp.stop()


REGISTRIES: dict = {}


def access_log_of(address: str):
    return access_log(REGISTRIES[address])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tags", type=int, default=200)
    ap.add_argument("--repos", type=int, default=10)
    ap.add_argument("--latency", type=float, default=0.0,
                    help="seconds a proxy adds to each exporter request (a remote registry)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-up-") as tmp:
        root = Path(tmp)
        tokens = TokenServer(root / "tokens", {USER: PASSWORD}).start()
        real = start_token_registry(root / "registry", tokens)
        proxy = None
        reg = real
        if args.latency:
            proxy = FaultProxy(real.port).start()
            proxy.mode, proxy.delay = "delay", args.latency
            reg = type("Via", (), {"address": proxy.address})()
        REGISTRIES[reg.address] = real
        d = Dockerd(root / "d").start()
        try:
            d.make_base_image("bench-base:1")
            d.cli("login", "-u", USER, "--password-stdin", reg.address, input=PASSWORD.encode())
            one = d.build("bench-one:1", "FROM bench-base:1\nCOPY v /v\n", {"v": "one"})
            two = d.build("bench-two:1", "FROM bench-base:1\nCOPY v /v\n", {"v": "two"})
            api = httpx.Client(transport=httpx.HTTPTransport(uds=str(d.socket)),
                               base_url="http://docker/v1.41")
            per_repo = args.tags // args.repos
            names = []
            for r in range(args.repos):
                repo = f"bench/r{r}"
                for image, tag in ((two, "next"), (one, "t0")):
                    api.post(f"/images/{image}/tag", params={"repo": f"{reg.address}/{repo}",
                                                             "tag": tag}).raise_for_status()
                    d.cli("push", f"{reg.address}/{repo}:{tag}")
                d.cli("rmi", f"{reg.address}/{repo}:next")
                manifest = httpx.get(f"http://{reg.address}/v2/{repo}/manifests/t0",
                                     headers={**token(tokens, repo), "Accept":
                                              "application/vnd.docker.distribution.manifest.v2+json"})
                for t in range(1, per_repo):
                    httpx.put(f"http://{reg.address}/v2/{repo}/manifests/t{t}",
                              content=manifest.content, headers={
                                  **token(tokens, repo), "Content-Type":
                                  "application/vnd.docker.distribution.manifest.v2+json"}
                              ).raise_for_status()
                    api.post(f"/images/{one}/tag", params={"repo": f"{reg.address}/{repo}",
                                                           "tag": f"t{t}"}).raise_for_status()
                    names.append((repo, f"t{t}"))
                names.append((repo, "t0"))
            tags = len(names)
            state = root / "state.db"
            print(f"machine: {platform.machine()}, {platform.python_version()}, "
                  f"{tags} tags in {args.repos} repositories, bearer-token registry, "
                  f"{args.latency * 1000:.0f} ms added per request")
            print("| run | start to every tag checked, s | HEAD | GET | token requests | drifted |")
            print("|---|---|---|---|---|---|")
            rows = [("default concurrency, nothing changed", ()),
                    ("concurrency 1, nothing changed", ("--upstream.concurrency", "1",
                                                        "--upstream.registry-concurrency", "1"))]
            for label, extra in rows:
                r = run_cycle(d, reg.address, tokens, state, root / "exp.log", tags, *extra)
                print(f"| {label} | {r['cycle_s']:.2f} | {r['head']} | {r['get']} | "
                      f"{r['token']} | {r['drifted']} |", flush=True)
            # 10 % of the tags move on upstream (the same new image in each repository).
            changed = names[:: 10]
            for repo, tag in changed:
                m = httpx.get(f"http://{reg.address}/v2/{repo}/manifests/next", headers={
                    **token(tokens, repo),
                    "Accept": "application/vnd.docker.distribution.manifest.v2+json"})
                httpx.put(f"http://{reg.address}/v2/{repo}/manifests/{tag}", content=m.content,
                          headers={**token(tokens, repo), "Content-Type":
                                   "application/vnd.docker.distribution.manifest.v2+json"}
                          ).raise_for_status()
            for label in ("10 % changed, first cycle", "10 % changed, next cycle"):
                r = run_cycle(d, reg.address, tokens, state, root / "exp.log", tags)
                print(f"| {label} | {r['cycle_s']:.2f} | {r['head']} | {r['get']} | "
                      f"{r['token']} | {r['drifted']} |", flush=True)
        finally:
            d.stop()
            real.stop()
            tokens.stop()
            if proxy:
                proxy.stop()


if __name__ == "__main__":
    main()
