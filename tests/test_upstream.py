"""Upstream drift against a real registry (CNCF Distribution) in three auth set-ups."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.registries import (
    OCI_MANIFEST,
    FaultProxy,
    TokenServer,
    access_log,
    put_index,
    registry_requests,
    start_htpasswd_registry,
    start_token_registry,
)
from tests.services import EVERY_ENGINE, Dockerd, Metrics, Podman, Registry

USER, PASSWORD = "hygiene", "s3cret-pass"
# The referrers tag schema's tag for a digest (OCI 1.1, on registries without the API).
REFERRERS_TAG = re.compile(r"/manifests/sha256-[0-9a-f]{64}$")
FAST = ("--upstream.interval", "2s", "--collector.engine.interval", "1s",
        "--collector.disk.interval", "1h")


def status(m: Metrics, image: str) -> str | None:
    """The upstream state in force for an image, with its reason: 'unknown:timeout'."""
    found = [(lb["status"], lb["reason"]) for lb, v in
             m.select("docker_image_upstream_status", image=image) if v == 1]
    assert len(found) <= 1, found
    if not found:
        return None
    return found[0][0] + (f":{found[0][1]}" if found[0][1] else "")


def push_version(d: Dockerd | Podman, ref: str, content: str) -> str:
    image_id = d.build(ref, "FROM hygiene-base:1\nCOPY v /v\n", {"v": content})
    d.push(ref)
    return image_id


def publish_elsewhere(d: Dockerd | Podman, ref: str, content: str) -> str:
    """Push new content under ``ref`` as another machine would: this host keeps its image."""
    old_id = d.image_id(ref)
    new_id = push_version(d, ref, content)
    d.cli("tag", old_id, ref)
    return new_id


@dataclass
class Setup:
    name: str
    registry: Registry
    args: tuple[str, ...]


@pytest.fixture(scope="module")
def htpasswd_registry(tmp_path_factory, dockerd: Dockerd) -> Iterator[Registry]:
    reg = start_htpasswd_registry(tmp_path_factory.mktemp("htpasswd"), {USER: PASSWORD})
    dockerd.cli("login", "-u", USER, "--password-stdin", reg.address, input=PASSWORD.encode())
    yield reg
    reg.stop()


@pytest.fixture(scope="module")
def token_server(tmp_path_factory) -> Iterator[TokenServer]:
    tokens = TokenServer(tmp_path_factory.mktemp("tokens"), {USER: PASSWORD}).start()
    yield tokens
    tokens.stop()


@pytest.fixture(scope="module")
def token_registry(tmp_path_factory, dockerd: Dockerd,
                   token_server: TokenServer) -> Iterator[Registry]:
    reg = start_token_registry(tmp_path_factory.mktemp("token-registry"), token_server)
    dockerd.cli("login", "-u", USER, "--password-stdin", reg.address, input=PASSWORD.encode())
    yield reg
    reg.stop()


@pytest.fixture
def setup(request, registry: Registry, tmp_path: Path, dockerd: Dockerd) -> Setup:
    if request.param == "anonymous":
        return Setup("anonymous", registry, ("--docker.config", str(tmp_path / "none.json")))
    if request.param == "htpasswd":
        reg = request.getfixturevalue("htpasswd_registry")
        # Credentials from the exporter's own config, the password from a file.
        (tmp_path / "pw").write_text(PASSWORD + "\n")
        cfg = tmp_path / "exporter.yml"
        cfg.write_text(f"registries:\n  \"{reg.address}\":\n    username: {USER}\n"
                       f"    password_file: {tmp_path / 'pw'}\n")
        return Setup("htpasswd", reg, ("--config.file", str(cfg), "--docker.config",
                                       str(tmp_path / "none.json")))
    reg = request.getfixturevalue("token_registry")
    # Credentials from the Docker client config that `docker login` wrote.
    return Setup("bearer", reg, ("--docker.config",
                                 str(dockerd.root / "client-config" / "config.json")))


# Credentials are the exporter's own business, whatever the engine: Podman runs the anonymous
# set-up only. Its registry is in Podman's registries.conf, so the exporter learns from /info
# that it is plain HTTP (no upstream.insecure_registries given).
@pytest.mark.parametrize(("engine", "setup"), [
    ("dockerd", "anonymous"), ("dockerd", "htpasswd"), ("dockerd", "bearer"),
    ("podman", "anonymous"), ("podman_rootless", "anonymous")], indirect=True)
def test_drift_lifecycle(setup: Setup, engine: Dockerd | Podman, exporter_factory,
                         tmp_path: Path):
    d = engine
    ref = f"{setup.registry.address}/hygiene/lifecycle-{setup.name}-{d.name}:1"
    push_version(d, ref, f"{setup.name} one")
    d.cli("rmi", ref)
    d.pull(ref)
    container = f"hygiene-lifecycle-{setup.name}"
    d.cli("run", "-d", "--name", container, *d.RUN, ref, "/bin/busybox", "sleep", "3600")
    state = str(tmp_path / "state.db")
    args = ("--docker.host", d.host, *FAST, *setup.args, "--state.path", state,
            "--upstream.include", f"^{setup.registry.address}/hygiene/lifecycle")
    exp = exporter_factory(*args)
    m = exp.wait_metrics(lambda m: status(m, ref) == "current", what=f"{ref} current")
    assert m.get("docker_image_upstream_drift", image=ref) == 0
    assert m.get("docker_container_upstream_drift", container=container, image=ref) == 0
    assert m.get("docker_image_upstream_drift_since_timestamp_seconds", image=ref) is None
    checked = m.get("docker_image_upstream_last_check_timestamp_seconds", image=ref)
    assert checked == pytest.approx(time.time(), abs=30)
    # Looked for a signature (none), and compared with the registry's other versions (none).
    m = exp.wait_metrics(lambda m: m.get("docker_image_versions_behind", image=ref) == 0,
                         what="versions read")
    assert m.get("docker_image_upstream_signed", image=ref) == 0

    publish_elsewhere(d, ref, f"{setup.name} two")
    m = exp.wait_metrics(lambda m: status(m, ref) == "drifted", what=f"{ref} drifted")
    assert m.get("docker_image_upstream_drift", image=ref) == 1
    assert m.get("docker_container_upstream_drift", container=container, image=ref) == 1
    since = m.get("docker_image_upstream_drift_since_timestamp_seconds", image=ref)
    assert since == pytest.approx(time.time(), abs=30)

    # drift-since survives a restart of the exporter.
    exp.stop()
    exp = exporter_factory(*args)
    m = exp.wait_metrics(lambda m: status(m, ref) == "drifted", what="drifted after restart")
    assert m.get("docker_image_upstream_drift_since_timestamp_seconds", image=ref) == since

    # Pulled again: the tag is current, drift-since gone; the container still runs the old
    # pull, so it is both stale and drifted until it is recreated.
    d.pull(ref)
    m = exp.wait_metrics(lambda m: status(m, ref) == "current", what="current after pull")
    assert m.get("docker_image_upstream_drift_since_timestamp_seconds", image=ref) is None
    assert m.get("docker_image_upstream_drift", image=ref) == 0
    assert m.get("docker_container_upstream_drift", container=container, image=ref) == 1
    assert m.get("docker_container_image_stale", container=container, image=ref) == 1
    d.cli("rm", "-f", container)
    d.cli("run", "-d", "--name", container, *d.RUN, ref, "/bin/busybox", "sleep", "3600")
    exp.wait_metrics(lambda m: m.get("docker_container_upstream_drift", container=container,
                                     image=ref) == 0, what="recreated container current")
    d.cli("rm", "-f", container)


# Docker only: Podman does not record the digest of a push, so a tag pushed from this host
# and never pulled is platform_unchanged there, after one manifest GET (see
# test_podman_built_pushed_then_pulled).
def test_one_head_per_tag_and_no_gets_when_nothing_changed(
        registry: Registry, dockerd: Dockerd, exporter_factory, tmp_path: Path) -> None:
    d = dockerd
    refs = []
    for repo in range(3):
        for tag in range(2):
            ref = f"{registry.address}/hygiene/count{repo}:v{tag}"
            push_version(d, ref, f"count {repo} {tag}")
            refs.append(ref)
    # Several containers share one tag; an extra local tag shares an image ID.
    for i in range(3):
        d.cli("create", "--name", f"hygiene-count-{i}", "--network", "none", refs[0],
              "/bin/busybox", "true")
    before = registry_requests(registry)
    args = ("--docker.host", d.host, "--upstream.interval", "1h", "--versions.enabled", "false",
            "--upstream.include", f"^{registry.address}/hygiene/count",
            "--state.path", str(tmp_path / "state.db"))
    for cycle in (1, 2):  # each start-up runs one cycle right away
        exp = exporter_factory(*args)
        m = exp.wait_metrics(lambda m: all(status(m, r) == "current"
                                           and m.get("docker_image_upstream_signed", image=r)
                                           is not None for r in refs),
                             what="every tag current")
        assert m.get("docker_registry_requests_total", registry=registry.address,
                     method="HEAD", code="200") == len(refs)
        time.sleep(1.5)
        counts = registry_requests(registry) - before
        signatures = {k for k in counts if REFERRERS_TAG.search(k[1]) or k[1].endswith(".sig")}
        tags = [(m, p) for (m, p) in counts.elements() if "/manifests/" in p
                and (m, p) not in signatures]
        assert sorted(tags) == sorted(("HEAD", p) for p in tags_of(refs) * cycle), counts
        # Besides, per distinct digest the signature is looked for once per start-up (and
        # then once per versions.interval). Distribution 2.8 answers the referrers API with
        # 404, once per registry (remembered for versions.interval); each unsigned digest
        # then costs a GET of its referrers tag (sha256-<hex>) and a HEAD of cosign's tag.
        digests = len(refs)
        assert sum(n for (m, p), n in counts.items() if p.endswith(".sig")) == cycle * digests
        assert sum(n for (m, p), n in counts.items()
                   if m == "GET" and REFERRERS_TAG.search(p)) == cycle * digests
        assert sum(n for (m, p), n in counts.items() if "/referrers/" in p) == cycle
        assert not [k for k in counts if k[0] == "GET" and k not in signatures and (
            "/manifests/" in k[1] or "/blobs/" in k[1])], counts
        exp.stop()
    for i in range(3):
        d.cli("rm", f"hygiene-count-{i}")


def tags_of(refs: list[str]) -> list[str]:
    """The manifest paths of references: host/name:tag -> /v2/name/manifests/tag."""
    out = []
    for ref in refs:
        name, _, tag = ref.split("/", 1)[1].rpartition(":")
        out.append(f"/v2/{name}/manifests/{tag}")
    return out


def test_bearer_tokens_are_reused_per_scope(token_registry: Registry,
                                            token_server: TokenServer, dockerd: Dockerd,
                                            exporter_factory, tmp_path: Path) -> None:
    d = dockerd
    refs = [f"{token_registry.address}/hygiene/tok{r}:v{t}" for r in range(2) for t in range(2)]
    for ref in refs:
        push_version(d, ref, ref)
    before = access_log(token_registry)
    before_paths = registry_requests(token_registry)
    token_server.requests.clear()
    exp = exporter_factory("--docker.host", d.host, *FAST, "--docker.config",
                           str(d.root / "client-config" / "config.json"),
                           "--versions.enabled", "false",
                           "--upstream.include", f"^{token_registry.address}/hygiene/tok")
    # Three cycles at least: every tag checked three times...
    exp.wait_metrics(lambda m: (m.get("docker_registry_requests_total",
                                      registry=token_registry.address, method="HEAD",
                                      code="200") or 0) >= 3 * len(refs),
                     what="three cycles", timeout=40)
    m = exp.scrape()
    assert all(status(m, r) == "current" for r in refs)
    # ... with one token per repository scope, reused until it expires (300 s here),
    # and no 401 on any manifest request: the challenge is learnt once, from GET /v2/.
    scopes = {f"repository:hygiene/tok{r}:pull" for r in range(2)}
    assert dict(token_server.requests) == dict.fromkeys(scopes, 1), (
        token_server.requests, m.select("docker_registry_requests_total"))
    counts = access_log(token_registry) - before
    # The only manifest GETs: each digest's referrers tag, its signature looked for once.
    gets = [p for (method, p) in (registry_requests(token_registry) - before_paths).elements()
            if method == "GET" and "/manifests/" in p]
    assert counts[("GET", "manifest")] == len(gets) == len(refs)
    assert all(REFERRERS_TAG.search(p) for p in gets), gets
    assert m.get("docker_registry_requests_total", registry=token_registry.address,
                 method="HEAD", code="401") is None
    assert m.get("docker_registry_requests_total", registry=token_registry.address,
                 method="GET", code="401") == 1  # GET /v2/ learns the challenge, once
    assert m.get("docker_registry_requests_total", registry=token_registry.address,
                 method="TOKEN", code="200") == 2


def test_credential_helper_from_docker_config(htpasswd_registry: Registry, dockerd: Dockerd,
                                              exporter_factory, tmp_path: Path) -> None:
    d = dockerd
    ref = f"{htpasswd_registry.address}/hygiene/helper:1"
    push_version(d, ref, "helper")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "helper-calls"
    helper = bin_dir / "docker-credential-hygienetest"
    helper.write_text("#!/bin/sh\nread server\necho \"$1 $server\" >> " + str(calls) + "\n"
                      f"printf '{{\"ServerURL\":\"%s\",\"Username\":\"{USER}\","
                      f"\"Secret\":\"{PASSWORD}\"}}' \"$server\"\n")
    helper.chmod(0o755)
    config = tmp_path / "docker-config.json"
    config.write_text(json.dumps({"credHelpers": {htpasswd_registry.address: "hygienetest"}}))
    import os

    exp = exporter_factory("--docker.host", d.host, *FAST, "--docker.config", str(config),
                           "--upstream.include", f"^{htpasswd_registry.address}/hygiene/helper",
                           env={"PATH": f"{bin_dir}:{os.environ['PATH']}"})
    exp.wait_metrics(lambda m: status(m, ref) == "current", what="current with helper creds")
    assert calls.read_text().splitlines()[0] == f"get {htpasswd_registry.address}"
    assert PASSWORD not in exp.log()


def test_wrong_credentials_are_auth_failed(htpasswd_registry: Registry, dockerd: Dockerd,
                                           exporter_factory, tmp_path: Path) -> None:
    ref = f"{htpasswd_registry.address}/hygiene/badcreds:1"
    push_version(dockerd, ref, "bad creds")
    cfg = tmp_path / "exporter.yml"
    cfg.write_text(f"registries:\n  \"{htpasswd_registry.address}\":\n    username: {USER}\n"
                   "    password: not-the-password\n")
    exp = exporter_factory("--docker.host", dockerd.host, *FAST, "--config.file", str(cfg),
                           "--docker.config", str(tmp_path / "none.json"),
                           "--upstream.include", f"^{htpasswd_registry.address}/hygiene/badc")
    m = exp.wait_metrics(lambda m: status(m, ref) == "unknown:auth_failed", what="auth_failed")
    assert m.get("docker_image_upstream_drift", image=ref) is None
    assert "not-the-password" not in exp.log()
    assert "not-the-password" not in exp.scrape_text()


def test_multi_arch_other_platform_rebuilt_is_not_drift(registry: Registry,
                                                        engine: Dockerd | Podman,
                                                        exporter_factory) -> None:
    # Podman keeps both the index's and this platform's manifest digest as RepoDigests.
    d = engine
    repo = f"{registry.address}/hygiene/multi-{d.name}"
    push_version(d, f"{repo}:amd64-1", "amd64 one")
    push_version(d, f"{repo}:arm64-1", "arm64 one")
    path = repo.split("/", 1)[1]
    put_index(registry.address, path, "latest", [("amd64-1", "amd64"), ("arm64-1", "arm64")])
    d.pull(f"{repo}:latest")
    ref = f"{repo}:latest"
    exp = exporter_factory("--docker.host", d.host, *FAST,
                           "--upstream.include", f"^{repo}:latest$")
    exp.wait_metrics(lambda m: status(m, ref) == "current", what="index current")

    # The arm64 entry is rebuilt: the index digest changes, this host's entry does not.
    push_version(d, f"{repo}:arm64-2", "arm64 two")
    put_index(registry.address, path, "latest", [("amd64-1", "amd64"), ("arm64-2", "arm64")])
    m = exp.wait_metrics(lambda m: status(m, ref) == "platform_unchanged",
                         what="platform_unchanged")
    assert m.get("docker_image_upstream_drift", image=ref) == 0
    assert m.get("docker_image_upstream_drift_since_timestamp_seconds", image=ref) is None

    # Now this host's entry changes: drift.
    push_version(d, f"{repo}:amd64-2", "amd64 two")
    put_index(registry.address, path, "latest", [("amd64-2", "amd64"), ("arm64-2", "arm64")])
    m = exp.wait_metrics(lambda m: status(m, ref) == "drifted", what="drifted")
    assert m.get("docker_image_upstream_drift", image=ref) == 1


def test_filters_and_opt_out_label(registry: Registry, dockerd: Dockerd,
                                   exporter_factory) -> None:
    d = dockerd
    kept = f"{registry.address}/hygiene/filter-kept:1"
    excluded = f"{registry.address}/hygiene/filter-excluded:1"
    opted = f"{registry.address}/hygiene/filter-opted:1"
    for ref in (kept, excluded, opted):
        push_version(d, ref, ref)
    d.cli("create", "--name", "hygiene-opted", "--label", "docker-hygiene.drift=false",
          "--network", "none", opted, "/bin/busybox", "true")
    exp = exporter_factory("--docker.host", d.host, *FAST,
                           "--upstream.include", f"^{registry.address}/hygiene/filter-",
                           "--upstream.exclude", "filter-excluded")
    m = exp.wait_metrics(lambda m: status(m, kept) == "current", what="kept current")
    time.sleep(2.5)
    m = exp.scrape()
    assert status(m, excluded) is None and status(m, opted) is None
    assert status(m, "hygiene-base:1") is None  # not included
    d.cli("rm", "hygiene-opted")


@EVERY_ENGINE
def test_local_builds_are_no_repo_digest(engine: Dockerd | Podman, exporter_factory) -> None:
    base = engine.local("hygiene-base:1")
    if isinstance(engine, Podman):
        # Podman gives localhost/ names a RepoDigest all the same, of a manifest it made.
        assert "localhost/hygiene-base@sha256:" in engine.cli(
            "image", "inspect", "-f", "{{.RepoDigests}}", base)
    # Were localhost/hygiene-base asked of a registry, the registry would be "localhost":
    # HTTPS on port 443, where this listener counts every connection.
    with ConnectionCounter(443) as connections:
        exp = exporter_factory("--docker.host", engine.host, *FAST, "--upstream.include",
                               f"^{re.escape(base)}$")
        m = exp.wait_metrics(lambda m: status(m, base) is not None)
        assert status(m, base) == "unknown:no_repo_digest"
        assert m.get("docker_image_upstream_drift", image=base) is None
        assert m.get("docker_image_info", image=base, digest="") == 1
        # More cycles of drift and versions (the tag "1" is a version): still nothing asked.
        later = time.time() + 2.5
        exp.wait_metrics(lambda m: all(
            (m.get("docker_exporter_collector_last_success_timestamp_seconds",
                   collector=c) or 0) > later for c in ("upstream", "versions")),
            what="more drift and versions cycles")
        m = exp.scrape()
        assert not [k for k in m.samples if k[0] == "docker_registry_requests_total"]
        assert not m.select("docker_image_versions_behind", image=base)
        assert connections.count == 0
        assert "hygiene-base" not in exp.log()  # no warning about it either


class ConnectionCounter:
    """Counts TCP connections to a loopback port (IPv4 and IPv6), closing each at once."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.count = 0
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> ConnectionCounter:
        for family, address in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
            s = socket.socket(family)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((address, self.port))  # fails loudly if the port is taken
            s.listen()
            self._sockets.append(s)
            thread = threading.Thread(target=self._accept, args=(s,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def _accept(self, s: socket.socket) -> None:
        while True:
            try:
                conn, _ = s.accept()
            except OSError:
                return
            self.count += 1
            conn.close()

    def __exit__(self, *exc: object) -> None:
        for s in self._sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
        for thread in self._threads:
            thread.join(5)


# -- Podman only ------------------------------------------------------------------------------

def test_podman_built_pushed_then_pulled(podman: Podman, registry: Registry,
                                         exporter_factory) -> None:
    """Podman gives an image built under a registry's name a RepoDigest of the manifest it
    made itself, and keeps it when it pushes: built, the tag is asked of the registry
    (not_found there yet); pushed, the registry's digest is not among the RepoDigests but
    its manifest has this image's config (platform_unchanged); pulled, current."""
    ref = f"{registry.address}/hygiene/podman-built:1"
    podman.build(ref, "FROM hygiene-base:1\nCOPY v /v\n", {"v": "built here"})
    exp = exporter_factory("--docker.host", podman.host, *FAST, "--upstream.include",
                           f"^{re.escape(ref)}$")
    exp.wait_metrics(lambda m: status(m, ref) == "unknown:not_found", what="not_found")
    podman.push(ref)
    served = httpx.head(f"http://{registry.address}/v2/hygiene/podman-built/manifests/1",
                        headers={"Accept": OCI_MANIFEST}).headers["docker-content-digest"]
    assert served not in podman.cli("image", "inspect", "-f", "{{.RepoDigests}}", ref)
    m = exp.wait_metrics(lambda m: status(m, ref) == "platform_unchanged",
                         what="platform_unchanged")
    assert m.get("docker_image_upstream_drift", image=ref) == 0
    podman.pull(ref)  # now the registry's digest is recorded
    exp.wait_metrics(lambda m: status(m, ref) == "current", what="current once pulled")


def test_podman_registry_outside_registries_conf_needs_insecure_registries(
        podman: Podman, tmp_path: Path, exporter_factory) -> None:
    """Podman has no implicit plain-HTTP loopback: a registry registries.conf does not mark
    insecure is asked over HTTPS, unless upstream.insecure_registries lists it."""
    other = Registry(tmp_path / "unlisted").start()
    try:
        ref = f"{other.address}/hygiene/unlisted:1"
        push_version(podman, ref, "unlisted")
        podman.cli("rmi", ref)
        podman.pull(ref)  # --tls-verify=false, as someone pulling from it by hand would
        args = ("--docker.host", podman.host, *FAST, "--upstream.include", f"^{re.escape(ref)}$")
        exp = exporter_factory(*args)
        m = exp.wait_metrics(lambda m: (status(m, ref) or "").startswith("unknown:"),
                             what="unknown over HTTPS")
        assert m.get("docker_image_upstream_drift", image=ref) is None
        exp.stop()
        exp = exporter_factory(*args, "--upstream.insecure-registries", other.address)
        exp.wait_metrics(lambda m: status(m, ref) == "current", what="current over HTTP")
    finally:
        other.stop()


# -- failures, through a proxy in front of the real registry --------------------------------

@pytest.fixture
def proxied(registry: Registry, dockerd: Dockerd) -> Iterator[tuple[FaultProxy, str]]:
    proxy = FaultProxy(registry.port).start()
    ref = f"{proxy.address}/hygiene/fault:1"
    push_version(dockerd, ref, "fault one")
    yield proxy, ref
    proxy.stop()


def _fault_exporter(exporter_factory, dockerd: Dockerd, proxy: FaultProxy, *extra: str):
    return exporter_factory("--docker.host", dockerd.host, *FAST, *extra,
                            "--upstream.include", f"^{proxy.address}/")


def test_missing_digest_header_falls_back_to_get(proxied, dockerd, exporter_factory) -> None:
    proxy, ref = proxied
    proxy.mode = "strip_digest"
    exp = _fault_exporter(exporter_factory, dockerd, proxy)
    m = exp.wait_metrics(lambda m: status(m, ref) == "current", what="current via GET")
    fallbacks = m.get("docker_registry_digest_fallbacks_total", registry=proxy.address)
    assert fallbacks >= 1
    assert proxy.counts[("GET", "/v2/hygiene/fault/manifests/1")] == fallbacks


@pytest.mark.parametrize(("mode", "headers", "reason"), [
    ("status", {"Retry-After": "120"}, "rate_limited"),
    ("status", {}, "rate_limited"),
])
def test_rate_limited_registry_is_left_alone(proxied, dockerd, exporter_factory, registry,
                                             mode, headers, reason) -> None:
    proxy, ref = proxied
    proxy.mode, proxy.status, proxy.headers = mode, 429, headers
    other = f"{registry.address}/hygiene/count0:v0"
    push_version(dockerd, other, "count 0 0")
    exp = exporter_factory("--docker.host", dockerd.host, *FAST, "--upstream.include",
                           f"^({proxy.address}/|{other}$)")
    exp.wait_metrics(lambda m: status(m, ref) == f"unknown:{reason}", what=reason)
    sent = sum(proxy.counts.values())
    heads_before = exp.scrape().get("docker_registry_requests_total",
                                    registry=registry.address, method="HEAD", code="200")
    time.sleep(5)  # two more cycles of the other registry
    m = exp.scrape()
    assert sum(proxy.counts.values()) == sent, "the rate-limited registry was asked again"
    assert m.get("docker_registry_requests_total", registry=registry.address, method="HEAD",
                 code="200") > heads_before, "the other registry stopped being checked"
    assert status(m, other) == "current"
    # One request in all: the first contact (GET /v2/) got the 429, nothing followed it.
    assert sum(v for lb, v in m.select("docker_registry_requests_total",
                                       registry=proxy.address)) == 1
    assert m.get("docker_registry_requests_total", registry=proxy.address, method="GET",
                 code="429") == 1


@pytest.mark.parametrize(("mode", "reason"), [
    ("delay", "timeout"), ("garbage", "bad_response"), ("status500", "server_error"),
    ("close", "unreachable"),
])
def test_failures_give_unknown_with_reason(proxied, dockerd, exporter_factory, mode,
                                           reason) -> None:
    proxy, ref = proxied
    proxy.mode, proxy.delay = mode, 3.0
    if mode == "status500":
        proxy.mode, proxy.status = "status", 500
    exp = _fault_exporter(exporter_factory, dockerd, proxy, "--upstream.timeout", "1s")
    m = exp.wait_metrics(lambda m: status(m, ref) == f"unknown:{reason}", what=reason)
    assert m.get("docker_image_upstream_drift", image=ref) is None
    assert m.get("docker_up") == 1
    assert m.get("docker_exporter_collector_success", collector="upstream") == 1


def test_drifted_never_flips_to_current_on_error(proxied, dockerd, exporter_factory) -> None:
    proxy, ref = proxied
    publish_elsewhere(dockerd, ref, "fault two")
    exp = _fault_exporter(exporter_factory, dockerd, proxy)
    m = exp.wait_metrics(lambda m: status(m, ref) == "drifted", what="drifted")
    since = m.get("docker_image_upstream_drift_since_timestamp_seconds", image=ref)
    checked = m.get("docker_image_upstream_last_check_timestamp_seconds", image=ref)
    proxy.mode, proxy.status, proxy.headers = "status", 503, {}
    m = exp.wait_metrics(lambda m: status(m, ref) == "unknown:server_error", what="503")

    def kept(m: Metrics) -> None:
        """Unknown now, but the drift decided before stands: an outage closes no alert."""
        assert m.get("docker_image_upstream_status", image=ref, status="current") == 0
        assert m.get("docker_image_upstream_drift_since_timestamp_seconds", image=ref) == since
        assert m.get("docker_image_upstream_last_check_timestamp_seconds", image=ref) == checked
        assert m.get("docker_image_upstream_drift", image=ref) == 1

    for _ in range(5):
        kept(exp.scrape())
        time.sleep(0.5)
    # A restart while the registry still fails: the verdict comes back from the state store.
    exp.stop()
    exp.start()
    m = exp.wait_metrics(lambda m: status(m, ref) == "unknown:server_error",
                         what="503 after the restart")
    kept(m)
    dockerd.cli("pull", ref)  # the tag now names the new image: the old verdict is not its
    m = exp.wait_metrics(
        lambda m: m.get("docker_image_upstream_drift", image=ref) is None,
        what="no verdict for the image pulled while the registry fails")
    assert status(m, ref) == "unknown:server_error"


def test_ratelimit_headers_are_exported(proxied, dockerd, exporter_factory) -> None:
    proxy, ref = proxied
    proxy.response_headers = {"ratelimit-limit": "100;w=21600",
                              "ratelimit-remaining": "76;w=21600"}
    exp = _fault_exporter(exporter_factory, dockerd, proxy)
    m = exp.wait_metrics(lambda m: status(m, ref) == "current", what="current")
    assert m.get("docker_registry_ratelimit_limit", registry=proxy.address) == 100
    assert m.get("docker_registry_ratelimit_remaining", registry=proxy.address) == 76


def test_secrets_stay_out_of_page_logs_and_metrics(htpasswd_registry, dockerd,
                                                   exporter_factory, tmp_path) -> None:
    import httpx

    cfg = tmp_path / "exporter.yml"
    cfg.write_text(f"registries:\n  \"{htpasswd_registry.address}\":\n    username: {USER}\n"
                   f"    password: {PASSWORD}\n")
    exp = exporter_factory("--docker.host", dockerd.host, *FAST, "--config.file", str(cfg),
                           "--log.level", "debug")
    exp.wait_metrics(lambda m: m.get("docker_exporter_collector_success",
                                     collector="upstream") == 1)
    page = httpx.get(exp.url + "/config").text
    assert htpasswd_registry.address in page and "&lt;masked&gt;" in page
    for text in (page, httpx.get(exp.url + "/").text, httpx.get(exp.url + "/status.json").text,
                 exp.log(), exp.scrape_text()):
        assert PASSWORD not in text
