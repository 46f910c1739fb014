"""Newer versions, signatures and upstream image age.

The rules for what a newer version is are pinned by table and fuzzed; then the whole thing
runs against the real registry (version tags with variants, a pre-release, signature-like
tags, a version without this host's platform, a cosign-style .sig tag, 1,000+ tags so the
list comes in pages), the OCI referrers API through a stand-in in front of it (Distribution
2.8 does not serve it), and the Docker Hub tags API through its stand-in.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from exporter import config as config_module
from exporter.config import ConfigError, VersionRule
from exporter.decisions.versions import newer, parse, rule_for
from exporter.timestamps import parse_timestamp
from tests.registries import (
    OCI_MANIFEST,
    FaultProxy,
    descriptor,
    digest_of,
    get_manifest,
    push_variant,
    put_cosign_signature,
    put_index,
    registry_requests,
)
from tests.services import EVERY_ENGINE, Dockerd, Metrics, Podman, Registry
from tests.standins import DockerHub, hub_tag
from tests.test_signatures import SIGN, Publisher
from tests.test_upstream import publish_elsewhere, push_version

FAST = ("--upstream.interval", "2s", "--collector.engine.interval", "1s",
        "--collector.disk.interval", "1h")


# -- what counts as a newer version ---------------------------------------------------------

@pytest.mark.parametrize("tag, shape, numbers, pre", [
    ("1.25", ("", 2, ""), (1, 25), False),
    ("1.25.3", ("", 3, ""), (1, 25, 3), False),
    ("v1.2.3", ("v", 3, ""), (1, 2, 3), False),
    ("1.25.3-alpine", ("", 3, "alpine"), (1, 25, 3), False),
    ("3.18.4-bookworm", ("", 3, "bookworm"), (3, 18, 4), False),
    ("1.25.3-alpine3.18", ("", 3, "alpine3.18"), (1, 25, 3), False),
    ("2.0.0-rc.1", ("", 3, ""), (2, 0, 0), True),
    ("2.0.0-beta2-alpine", ("", 3, "alpine"), (2, 0, 0), True),
    ("7", ("", 1, ""), (7,), False),
])
def test_version_shapes(tag: str, shape: tuple, numbers: tuple, pre: bool) -> None:
    v = parse(tag)
    assert v is not None
    assert (v.shape, v.numbers, v.pre is not None) == (shape, numbers, pre)


@pytest.mark.parametrize("tag", [
    "latest", "stable", "alpine", "sha256-" + "a" * 64 + ".sig", "sha256-" + "a" * 64 + ".att",
    "sha256-" + "a" * 64 + ".sbom", "1.2.3.sig", "1.2.3.att", "1.2.3rc1", "1.2.3.4.5",
    "2024-01-15", "ci-0001", "", "v", "1..2", "1.2.",
])
def test_not_versions(tag: str) -> None:
    assert parse(tag) is None


UPSTREAM = ["1.2.0", "1.2.1", "1.3.0", "1.10.0", "1.5.0-rc1", "2.0.0", "1.2.0-alpine",
            "1.3.0-alpine", "1.10", "v2.0.0", "latest", "sha256-" + "b" * 64 + ".sig",
            "1.9.9-alpine3.19"]


ANY = VersionRule(pin="none")


@pytest.mark.parametrize("current, rule, expected", [
    ("1.2.0", ANY, ["2.0.0", "1.10.0", "1.3.0", "1.2.1"]),
    ("1.2.0", VersionRule(pin="major"), ["1.10.0", "1.3.0", "1.2.1"]),
    ("1.2.0", VersionRule(pin="minor"), ["1.2.1"]),
    ("1.2.0", VersionRule(pin="major", prereleases=True),
     ["1.10.0", "1.5.0-rc1", "1.3.0", "1.2.1"]),
    ("1.2.0", VersionRule(pin="none", include=r"^1\."), ["1.10.0", "1.3.0", "1.2.1"]),
    ("1.2.0", VersionRule(pin="none", exclude=r"^1\.10\."), ["2.0.0", "1.3.0", "1.2.1"]),
    ("1.2.0-alpine", ANY, ["1.3.0-alpine"]),
    ("1.5.0-rc0", ANY, ["2.0.0", "1.10.0", "1.5.0-rc1"]),  # a pre-release follows
    ("v1.9.0", ANY, ["v2.0.0"]),
    ("v1.9.0", VersionRule(pin="major"), []),
    ("1.9", ANY, ["1.10"]),
    ("2.0.0", ANY, []),
])
def test_newer_versions(current: str, rule: VersionRule, expected: list[str]) -> None:
    v = parse(current)
    assert v is not None
    assert [n.tag for n in newer(v, UPSTREAM, rule)] == expected


NGINX = ["1.25.3", "1.25.4", "1.27.0", "2.0.0", "1.27", "16", "17"]


@pytest.mark.parametrize("current, rules, pin, expected", [
    # The default (versions.pin major): new minors and patches, never a new major.
    ("nginx:1.25.3", (), "major", ["1.27.0", "1.25.4"]),
    # A single number pins everything it says: postgres:16 sees nothing by default.
    ("postgres:16", (), "major", []),
    ("postgres:16", (), "none", ["17"]),
    ("nginx:1.25.3", (), "none", ["2.0.0", "1.27.0", "1.25.4"]),
    ("nginx:1.25.3", (), "minor", ["1.25.4"]),
    # A rule without a pin takes versions.pin; a rule's own pin, none included, wins.
    ("nginx:1.25.3", (VersionRule(image="^nginx:", exclude="^1\\.25"),), "major", ["1.27.0"]),
    ("nginx:1.25.3", (VersionRule(image="^nginx:", pin="none"),), "major",
     ["2.0.0", "1.27.0", "1.25.4"]),
    ("postgres:16", (VersionRule(image="^postgres:", pin="none"),), "major", ["17"]),
    ("postgres:16", (VersionRule(image="^nginx:", pin="none"),), "major", []),
])
def test_default_pin(current: str, rules: tuple[VersionRule, ...], pin: str,
                     expected: list[str]) -> None:
    v = parse(current.partition(":")[2])
    assert v is not None
    assert [n.tag for n in newer(v, NGINX, rule_for(current, rules, pin))] == expected


def test_unset_pin_is_not_taken_for_none() -> None:
    """Only rule_for fills a pin: a rule that reached newer() without one is a bug."""
    v = parse("1.2.0")
    assert v is not None
    with pytest.raises(KeyError):
        newer(v, UPSTREAM, VersionRule())


@given(st.text(alphabet="0123456789.-vVabcdelprtsh", max_size=20),
       st.lists(st.text(alphabet="0123456789.-valpinerc", max_size=14), max_size=30),
       st.sampled_from(["none", "major", "minor"]))
def test_newer_is_always_same_shape_and_greater(current: str, tags: list[str],
                                                pin: str) -> None:
    v = parse(current)
    if v is None:
        return
    found = newer(v, tags, VersionRule(pin=pin, prereleases=True))
    kept = {"none": 0, "major": 1, "minor": 2}[pin]
    for n in found:
        assert n.shape == v.shape and n.order > v.order
        assert n.numbers[:kept] == v.numbers[:kept]
    assert [n.order for n in found] == sorted((n.order for n in found), reverse=True)


def test_first_matching_rule_applies_and_labels_override_it() -> None:
    rules = (VersionRule(image=r"^nginx:", pin="minor"), VersionRule(image=r".", pin="none"))
    assert rule_for("nginx:1.25.3", rules, "major").pin == "minor"
    assert rule_for("redis:7.2", rules, "major").pin == "none"
    assert rule_for("redis:7.2", (), "major") == VersionRule(pin="major")
    assert rule_for("redis:7.2", (), "minor") == VersionRule(pin="minor")
    assert rule_for("redis:7.2", (VersionRule(image="."),), "major").pin == "major"
    merged = rules[0].merged({"pin": "none", "prereleases": "true", "include": "(bad"})
    assert (merged.pin, merged.prereleases, merged.include) == ("none", True, "")
    # A label pin: none on a container of a default-pinned image allows major updates.
    assert rule_for("redis:7.2", (), "major").merged({"pin": "none"}).pin == "none"


def test_rule_config_errors_name_the_key(tmp_path: Path) -> None:
    for text, message in [
        ("versions:\n  rules:\n    - pin: major\n", "versions.rules: [0].image: required"),
        ("versions:\n  rules:\n    - image: x\n      pin: patch\n",
         "versions.rules: [0].pin: 'patch' is not one of none, major, minor"),
        ("versions:\n  rules:\n    - image: '('\n", "versions.rules: [0].image: '(' is not a "
                                                    "regular expression"),
        ("versions:\n  max_tags: 0\n", "versions.max_tags: 0 must be between"),
    ]:
        path = tmp_path / "c.yml"
        path.write_text(text)
        with pytest.raises(ConfigError) as err:
            config_module.build(environ={}, config_file=str(path))
        assert str(err.value).startswith(message), str(err.value)


# -- against the real registry --------------------------------------------------------------

def ts(text: str) -> float:
    value = parse_timestamp(text)
    assert value is not None
    return value


def newest(m: Metrics, image: str) -> tuple[str, str, float | None]:
    """(current, latest, versions behind) as the metrics say: one info series, or none
    (latest "") when nothing is newer."""
    info = m.select("docker_image_newer_version_info", image=image)
    assert len(info) <= 1 and all(v == 1.0 for _, v in info), info
    labels = info[0][0] if info else {"current": "", "latest": ""}
    return labels["current"], labels["latest"], m.get("docker_image_versions_behind",
                                                       image=image)


@dataclass
class Versions:
    repo: str  # registry/hygiene/versions
    name: str  # hygiene/versions
    signed_digest: str


@pytest.fixture(scope="module")
def versions_repo(dockerd: Dockerd, registry: Registry) -> Iterator[Versions]:
    d, address, name = dockerd, registry.address, "hygiene/versions"
    repo = f"{address}/{name}"
    push_version(d, f"{repo}:1.2.0", "one two zero")
    push_version(d, f"{repo}:1.2.0-alpine", "alpine one two zero")
    base = get_manifest(address, name, "1.2.0")
    arch = d.arch()
    for tag, created in [("1.2.1", "2026-01-01T00:00:00Z"), ("1.3.0", "2026-02-01T00:00:00Z"),
                         ("2.0.0", "2026-04-01T00:00:00Z"), ("1.5.0-rc1", "2026-05-01T00:00:00Z"),
                         ("1.2.5-alpine", "2026-02-10T00:00:00Z"),
                         ("1.3.0-alpine", "2026-02-15T00:00:00Z"), ("1.10", "2026-01-01T00:00:00Z"),
                         ("v3.0.0", "2026-06-01T00:00:00Z"), ("latest", "2026-06-01T00:00:00Z")]:
        push_variant(address, name, tag, base, created, arch)
    # 1.4.0 is the newest release of the shape, but has no image for this platform.
    push_variant(address, name, "other-platform", base, "2026-03-01T00:00:00Z", "s390x")
    put_index(address, name, "1.4.0", [("other-platform", "s390x")])
    # Signature-like tags that must never be taken for versions, and a real cosign-style one
    # for 1.2.0's digest.
    r = httpx.head(f"http://{address}/v2/{name}/manifests/1.2.0",
                   headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"})
    signed = r.headers["docker-content-digest"]
    put_cosign_signature(address, name, signed)
    ci_manifest = get_manifest(address, name, "1.2.1")
    with httpx.Client() as client:
        body = httpx.Request("PUT", "http://x", json=ci_manifest).content
        for i in range(1005):  # past one page of 1,000: the list needs a Link to follow
            client.put(f"http://{address}/v2/{name}/manifests/ci-{i:04d}", content=body,
                       headers={"Content-Type": ci_manifest["mediaType"]}
                       ).raise_for_status()
        for tag in ("sha256-" + "c" * 64 + ".att", "9.9.9.sig", "sha256-" + "d" * 64 + ".sbom"):
            client.put(f"http://{address}/v2/{name}/manifests/{tag}", content=body,
                       headers={"Content-Type": ci_manifest["mediaType"]}
                       ).raise_for_status()
    yield Versions(repo, name, signed)


def test_newer_versions_signatures_and_age_from_a_real_registry(
        versions_repo: Versions, dockerd: Dockerd, registry: Registry, exporter_factory,
        tmp_path: Path) -> None:
    d, v = dockerd, versions_repo
    run = ("--network", "none")
    for container, labels in [("ver-any", []),
                              ("ver-major", ["docker-hygiene.versions.pin=major"]),
                              ("ver-minor", ["docker-hygiene.versions.pin=minor",
                                             r"docker-hygiene.versions.exclude=^1\.2\.1$"])]:
        label_args = [a for lb in labels for a in ("--label", lb)]
        d.cli("run", "-d", "--name", container, *run, *label_args, f"{v.repo}:1.2.0",
              "/bin/busybox", "sleep", "3600")
    cfg = tmp_path / "exporter.yml"
    cfg.write_text("versions:\n  interval: 1h\n  rules:\n"
                   "    - image: '-alpine$'\n      exclude: '^1\\.3\\.0-alpine$'\n")
    state = str(tmp_path / "state.db")
    # Any newer version counts (pin none), so the labels' pins have something to narrow.
    args = ("--docker.host", d.host, *FAST, "--config.file", str(cfg), "--state.path", state,
            "--upstream.include", f"^{re.escape(v.repo)}:", "--versions.pin", "none")
    before = registry_requests(registry)
    exp = exporter_factory(*args)
    one, alpine = f"{v.repo}:1.2.0", f"{v.repo}:1.2.0-alpine"

    def ready(m: Metrics) -> bool:
        return (m.get("docker_image_versions_behind", image=one) is not None
                and m.get("docker_image_versions_behind", image=alpine) is not None
                and m.get("docker_image_upstream_signed", image=alpine) is not None)

    m = exp.wait_metrics(ready, what="versions and signatures of both tags")
    # 1.2.1, 1.3.0 and 2.0.0; not 1.4.0 (no image for this platform), 1.5.0-rc1 (a
    # pre-release), 1.10 (two components), v3.0.0 (another shape) or any non-version tag.
    assert newest(m, one) == ("1.2.0", "2.0.0", 3)
    # A newer version has existed since 1.2.1 was built, not only since 2.0.0 was.
    assert m.get("docker_image_newer_version_created_timestamp_seconds", image=one) == \
        ts("2026-01-01T00:00:00Z")
    # The configured rule for -alpine tags excludes 1.3.0-alpine: 1.2.5-alpine is the newest.
    assert newest(m, alpine) == ("1.2.0-alpine", "1.2.5-alpine", 1)
    assert m.get("docker_image_newer_version_created_timestamp_seconds", image=alpine) == \
        ts("2026-02-10T00:00:00Z")
    # Labels: pinned to the major version there is still 1.3.0; pinned to 1.2 with 1.2.1
    # excluded there is nothing.
    assert m.get("docker_container_newer_version_available", container="ver-any",
                 image=one) == 1
    assert m.get("docker_container_newer_version_available", container="ver-major",
                 image=one) == 1
    assert m.get("docker_container_newer_version_available", container="ver-minor",
                 image=one) == 0
    # Signatures: 1.2.0's digest has a cosign .sig tag, 1.2.0-alpine's none.
    assert m.get("docker_image_upstream_signed", image=one) == 1
    assert m.get("docker_image_upstream_signed", image=alpine) == 0
    # A current tag's upstream image is the local one: its build time (the engine lists it
    # in whole seconds).
    local_created = ts(d.cli("image", "inspect", "-f", "{{.Created}}", one).strip())
    assert m.get("docker_image_upstream_created_timestamp_seconds", image=one) == \
        pytest.approx(local_created, abs=1)

    # Several more cycles: the tag list and the candidates are not asked again. (Distribution
    # 2.8 ignores n and sends all 1,000+ tags at once; pages are tested through a stand-in.)
    time.sleep(6)
    asked = registry_requests(registry) - before
    tag_lists = {p: n for (method, p), n in asked.items() if "/tags/list" in p}
    assert tag_lists == {f"/v2/{v.name}/tags/list?n=1000": 1}, tag_lists
    heads = {p.rsplit("/", 1)[1]: n for (method, p), n in asked.items()
             if method == "HEAD" and "/manifests/" in p}
    candidates = {"1.2.1", "1.3.0", "1.4.0", "2.0.0", "1.2.5-alpine"}
    assert {t: heads.get(t) for t in candidates} == dict.fromkeys(candidates, 1)
    assert not {"1.5.0-rc1", "1.10", "v3.0.0", "latest", "1.3.0-alpine"} & set(heads)
    assert not any(t.startswith(("ci-", "9.9.9")) for t in heads)
    # Distribution 2.8 has no referrers API: it answered 404 once, remembered for the
    # registry; each digest's referrers tag (sha256-<hex>, empty here) was read instead, then
    # the .sig tag.
    assert sum(n for (method, p), n in asked.items() if "/referrers/" in p) == 1
    referrers_tags = {p.rsplit("/", 1)[1] for (method, p) in asked
                      if method == "GET" and re.search(r"/manifests/sha256-[0-9a-f]{64}$", p)}
    assert v.signed_digest.replace(":", "-") in referrers_tags and len(referrers_tags) == 2
    assert heads[v.signed_digest.replace(":", "-") + ".sig"] >= 1

    # Restarted with the same state file: the tag list is not read again within its interval.
    exp.stop()
    exp = exporter_factory(*args)
    exp.wait_metrics(ready, what="versions after a restart")
    asked = registry_requests(registry) - before
    assert sum(n for (_, p), n in asked.items() if "/tags/list" in p) == 1
    # Nor are the candidates asked again: what they hold is in the state store too.
    heads = {p.rsplit("/", 1)[1]: n for (method, p), n in asked.items()
             if method == "HEAD" and "/manifests/" in p}
    assert {t: heads.get(t) for t in candidates} == dict.fromkeys(candidates, 1)

    # The tag moves on elsewhere: its upstream image's build time is the new image's.
    new_id = publish_elsewhere(d, alpine, "alpine one two zero, rebuilt")
    new_created = ts(d.cli("image", "inspect", "-f", "{{.Created}}", new_id).strip())
    m = exp.wait_metrics(lambda m: m.get("docker_image_upstream_drift", image=alpine) == 1,
                         what="alpine drifted")
    assert m.get("docker_image_upstream_created_timestamp_seconds", image=alpine) == \
        pytest.approx(new_created, abs=1e-3)
    assert m.get("docker_image_upstream_signed", image=alpine) == 0
    for container in ("ver-any", "ver-major", "ver-minor"):
        d.cli("rm", "-f", container)


def test_newer_versions_keep_the_major_version_by_default(
        dockerd: Dockerd, registry: Registry, exporter_factory, tmp_path: Path) -> None:
    """1.0.0 sees 1.1.0 but not 2.0.0 with no configuration; with --versions.pin none it
    sees 2.0.0 too, and a container's label pin: minor narrows that again."""
    d = dockerd
    name = "hygiene/pinned"
    repo = f"{registry.address}/{name}"
    one = f"{repo}:1.0.0"
    push_version(d, one, "pinned one zero zero")
    base = get_manifest(registry.address, name, "1.0.0")
    for tag, created in [("1.1.0", "2026-02-01T00:00:00Z"), ("2.0.0", "2026-03-01T00:00:00Z")]:
        push_variant(registry.address, name, tag, base, created, d.arch())
    d.cli("run", "-d", "--name", "pinned-minor", *d.RUN, "--label",
          "docker-hygiene.versions.pin=minor", one, "/bin/busybox", "sleep", "3600")
    try:
        args = ("--docker.host", d.host, *FAST, "--upstream.include", f"^{re.escape(repo)}:")

        def read(m: Metrics) -> bool:
            return m.get("docker_image_versions_behind", image=one) is not None

        exp = exporter_factory(*args, "--state.path", str(tmp_path / "default.db"))
        m = exp.wait_metrics(read, what="versions with the default pin")
        assert newest(m, one) == ("1.0.0", "1.1.0", 1)
        assert m.get("docker_image_newer_version_created_timestamp_seconds", image=one) == \
            ts("2026-02-01T00:00:00Z")
        exp.stop()

        exp = exporter_factory(*args, "--versions.pin", "none",
                               "--state.path", str(tmp_path / "none.db"))
        m = exp.wait_metrics(read, what="versions with pin none")
        assert newest(m, one) == ("1.0.0", "2.0.0", 2)
        # The container's own label keeps it on 1.0.x: nothing is newer for it.
        assert m.get("docker_container_newer_version_available", container="pinned-minor",
                     image=one) == 0
    finally:
        d.cli("rm", "-f", "pinned-minor")


def test_tag_list_pages_and_cap(versions_repo: Versions, dockerd: Dockerd, registry: Registry,
                                exporter_factory) -> None:
    """Link pages as the distribution spec has them, through a stand-in in front of the real
    registry; and versions.max_tags stops reading at the cap."""
    d = dockerd
    proxy = FaultProxy(registry.port).start()
    proxy.page_tags = True
    try:
        local = f"{proxy.address}/{versions_repo.name}:1.2.0"
        d.cli("pull", local)
        base = ("--docker.host", d.host, *FAST, "--upstream.include", f"^{re.escape(local)}$",
                "--versions.pin", "none")
        exp = exporter_factory(*base)
        m = exp.wait_metrics(lambda m: m.get("docker_image_versions_behind", image=local)
                             is not None, what="versions through pages")
        assert m.select("docker_image_newer_version_info", image=local)[0][0]["latest"] == "2.0.0"
        every = sorted(httpx.get(f"http://{registry.address}/v2/{versions_repo.name}/tags/list"
                                 ).json()["tags"])
        assert len(every) > 1000
        assert proxy.pages == ["n=1000", f"last={every[999]}&n=1000"]
        exp.stop()

        proxy.pages.clear()
        exp = exporter_factory(*base, "--versions.max-tags", "300")
        m = exp.wait_metrics(lambda m: m.get("docker_image_versions_behind", image=local)
                             is not None, what="versions from a capped list")
        # Tags are listed in lexical order: every version tag is in the first 300.
        assert m.get("docker_image_versions_behind", image=local) == 3
        assert proxy.pages == ["n=300"]
        assert "reading only the first 300" in exp.log()
        exp.stop()
        d.cli("rmi", local)
    finally:
        proxy.stop()


def test_referrers_api_and_its_fallback(dockerd: Dockerd, registry: Registry,
                                        exporter_factory) -> None:
    """Signatures as referrers (OCI 1.1) through a stand-in for the API, cosign's tag
    asked at the same time; an SBOM referrer is no signature."""
    d = dockerd
    proxy = FaultProxy(registry.port).start()
    proxy.referrers = {}
    try:
        name = "hygiene/signed"
        refs = {n: f"{proxy.address}/{name}:{n}" for n in ("tagged", "referred", "sbom-only")}
        for n, ref in refs.items():
            push_version(d, ref, f"signed {n}")
        digests = {n: httpx.head(
            f"http://{registry.address}/v2/{name}/manifests/{n}", headers={
                "Accept": "application/vnd.docker.distribution.manifest.v2+json"}
        ).headers["docker-content-digest"] for n in refs}
        put_cosign_signature(registry.address, name, digests["tagged"])
        bundle = "application/vnd.dev.sigstore.bundle.v0.3+json"
        proxy.referrers = {
            # A cosign 3 signature: the bundle type is shared with attestations, the
            # annotation (which the API copies from the manifest) tells them apart.
            digests["referred"]: [{"mediaType": OCI_MANIFEST, "size": 700,
                                   "digest": digest_of(b"bundle"), "artifactType": bundle,
                                   "annotations": {"dev.sigstore.bundle.predicateType":
                                                   "https://sigstore.dev/cosign/sign/v1"}}],
            digests["sbom-only"]: [{"mediaType": OCI_MANIFEST, "size": 900,
                                    "digest": digest_of(b"sbom"),
                                    "artifactType": "application/spdx+json"}],
        }
        exp = exporter_factory("--docker.host", d.host, *FAST, "--versions.enabled", "false",
                               "--upstream.include", f"^{re.escape(proxy.address)}/{name}:")
        m = exp.wait_metrics(lambda m: all(
            m.get("docker_image_upstream_signed", image=r) is not None for r in refs.values()),
            what="signatures of three tags")
        assert {n: m.get("docker_image_upstream_signed", image=r) for n, r in refs.items()} == \
            {"tagged": 1, "referred": 1, "sbom-only": 0}
        sig_heads = {p for (method, p) in proxy.counts if method == "HEAD" and p.endswith(".sig")}
        assert sig_heads == {f"/v2/{name}/manifests/{digests[n].replace(':', '-')}.sig"
                             for n in refs}
        assert {p for (method, p) in proxy.counts if "/referrers/" in p} == {
            f"/v2/{name}/referrers/{digests[n]}" for n in refs}
    finally:
        proxy.stop()


def test_docker_hub_tags_api(registry: Registry, tmp_path_factory, exporter_factory) -> None:
    """Docker Hub repositories: tags, platforms and push times from the Hub API's stand-in,
    nothing from the registry. The image comes from Docker Hub as far as the engine knows:
    pulled through a registry mirror (the local registry)."""
    host = Dockerd(Path(tmp_path_factory.mktemp("hub-mirror", numbered=True)),
                   args=("--registry-mirror", f"http://{registry.address}")).start()
    try:
        host.make_base_image("hygiene-base:1")
        push_version(host, f"{registry.address}/hygieneorg/tool:1.2.0", "tool 1.2.0")
        host.cli("rmi", f"{registry.address}/hygieneorg/tool:1.2.0")
        host.cli("pull", "hygieneorg/tool:1.2.0")
        assert "hygieneorg/tool@sha256:" in host.cli(
            "image", "inspect", "-f", "{{.RepoDigests}}", "hygieneorg/tool:1.2.0")
        # The drift check of this tag would go to registry-1.docker.io: not from here.
        host.cli("run", "-d", "--name", "tool", "--network", "none", "--label",
                 "docker-hygiene.drift=false", "hygieneorg/tool:1.2.0", "/bin/busybox",
                 "sleep", "3600")
        arch = host.arch()
        tags = [hub_tag("1.2.0", "2026-01-01T00:00:00Z", [("linux", arch)]),
                hub_tag("1.3.0", "2026-03-01T00:00:00Z", [("linux", arch), ("linux", "s390x")]),
                hub_tag("1.4.0", "2026-04-01T00:00:00Z", [("linux", "s390x")]),
                hub_tag("2.0.0-rc1", "2026-05-01T00:00:00Z", [("linux", arch)]),
                hub_tag("latest", "2026-05-01T00:00:00Z", [("linux", arch)]),
                hub_tag("sha256-" + "e" * 64 + ".sig", "2026-05-02T00:00:00Z", []),
                *(hub_tag(f"pr-{i}", "2025-06-01T00:00:00Z", [("linux", arch)])
                  for i in range(150))]
        hub = DockerHub({"hygieneorg/tool": (10, 1, "2026-05-01T00:00:00Z")},
                        tags={"hygieneorg/tool": tags})
        before = registry_requests(registry)
        try:
            exp = exporter_factory("--docker.host", host.host, *FAST, "--hub.url", hub.url,
                                   "--hub.interval", "1s")
            image = "hygieneorg/tool:1.2.0"
            m = exp.wait_metrics(lambda m: m.get("docker_image_versions_behind", image=image)
                                 is not None, what="Hub versions")
            assert newest(m, image) == ("1.2.0", "1.3.0", 1)
            assert m.get("docker_image_newer_version_created_timestamp_seconds",
                         image=image) == ts("2026-03-01T00:00:00Z")
            assert m.get("docker_container_newer_version_available", container="tool",
                         image=image) == 1
            m = exp.wait_metrics(lambda m: m.get(
                "docker_image_upstream_tag_last_pushed_timestamp_seconds", image=image)
                is not None, what="tag_last_pushed")
            assert m.get("docker_image_upstream_tag_last_pushed_timestamp_seconds",
                         image=image) == ts("2026-01-01T00:00:00Z")
            time.sleep(4)
            # Two pages of 100, read once; the registry was never asked.
            assert hub.requests["GET /v2/namespaces/hygieneorg/repositories/tool/tags"] == 2
            assert not any("hygieneorg" in p for (_, p) in registry_requests(registry) - before)
        finally:
            hub.stop()
    finally:
        host.stop()


@EVERY_ENGINE
def test_newer_version_and_signature_through_either_engine(
        engine: Dockerd | Podman, registry: Registry, exporter_factory, tmp_path: Path) -> None:
    """What the engine gives (tag, RepoDigest, platform) is enough on Podman as on Docker:
    a newer version is found and a signature in the referrers tag schema is seen. Podman
    pushes OCI manifests and records no digest for a push, so the tag is pulled back."""
    d = engine
    name = f"hygiene/found-{d.name}"
    repo = f"{registry.address}/{name}"
    push_version(d, f"{repo}:1.1.0", f"{d.name} one one zero")
    push_version(d, f"{repo}:1.0.0", f"{d.name} one zero zero")
    d.cli("rmi", f"{repo}:1.0.0", f"{repo}:1.1.0")
    d.pull(f"{repo}:1.0.0")
    subject = descriptor(registry.address, name, "1.0.0")
    Publisher(registry.address, name, tmp_path / "oras").bundle(subject, SIGN)
    container = f"found-{d.name}"
    d.cli("run", "-d", "--name", container, *d.RUN, f"{repo}:1.0.0", "/bin/busybox", "sleep",
          "3600")
    try:
        exp = exporter_factory("--docker.host", d.host, *FAST, "--state.path",
                               str(tmp_path / "state.db"), "--upstream.include",
                               f"^{re.escape(repo)}:")
        one = f"{repo}:1.0.0"
        m = exp.wait_metrics(lambda m: m.get("docker_image_versions_behind", image=one)
                             is not None and m.get("docker_image_upstream_signed", image=one)
                             is not None, what="versions and the signature")
        assert newest(m, one) == ("1.0.0", "1.1.0", 1)
        assert m.get("docker_container_newer_version_available", container=container,
                     image=one) == 1
        assert m.get("docker_image_upstream_signed", image=one) == 1
        assert m.get("docker_image_upstream_status", image=one, status="current",
                     reason="") == 1
    finally:
        d.cli("rm", "-f", container)
