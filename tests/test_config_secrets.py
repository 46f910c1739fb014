"""Secrets in the configuration: the user-info of a configured URL and the secrets read from
files are in force but never shown: not by Config.shown() (the /config page), not in logs,
labels or configuration errors."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from exporter import config
from exporter.values import redact_url
from tests.services import wait_for
from tests.standins import DockerHub, Harbor

NOWHERE = "unix:///nonexistent.sock"


@pytest.mark.parametrize(("text", "masked"), [
    ("https://bot:s3cret@hub.example/v2", "https://<masked>@hub.example/v2"),
    ("http://bot@h:80", "http://<masked>@h:80"),
    ("ssh://me@host", "ssh://<masked>@host"),
    ("http://a:p@ss@h/x", "http://<masked>@h/x"),  # an unescaped @ in the password
    ("Client error '401' for url 'http://u:p@127.0.0.1:1/api/v1/query?query=x'",
     "Client error '401' for url 'http://<masked>@127.0.0.1:1/api/v1/query?query=x'"),
    ("two: http://u:p@a/ and https://v:q@b/", "two: http://<masked>@a/ and https://<masked>@b/"),
    ("https://hub.docker.com", "https://hub.docker.com"),
    ("mail bot@example.com", "mail bot@example.com"),
])
def test_redact_url(text: str, masked: str) -> None:
    assert redact_url(text) == masked


def test_shown_masks_user_info_and_secrets(tmp_path: Path) -> None:
    (tmp_path / "pat").write_text("dckr_pat_file_secret\n")
    (tmp_path / "hook").write_text("Bearer hook-file-secret\n")
    f = tmp_path / "c.yml"
    f.write_text(
        "upstream:\n  mode: central\n  prometheus_url: http://prom:prom-secret@127.0.0.1:9090\n"
        "docker:\n  host: tcp://dock:dock-secret@127.0.0.1:2375\n"
        f"hub:\n  url: https://hubuser:hub-secret@hub.example\n  password_file: {tmp_path}/pat\n"
        f"webhook:\n  distribution:\n    secret_file: {tmp_path}/hook\n"
        "harbor:\n  instances:\n    - url: https://robot:harbor-secret@harbor.example\n"
        "      projects: [team]\n"
        "registries:\n  ghcr.io: {username: bot, password: ghcr-secret}\n")
    cfg = config.build({}, environ={}, config_file=str(f))
    # In force, under names that say what they hold ...
    assert cfg.hub_password == "dckr_pat_file_secret"
    assert cfg.webhook_distribution_secret == "Bearer hook-file-secret"
    assert cfg.upstream_prometheus_url == "http://prom:prom-secret@127.0.0.1:9090"
    # ... but never shown.
    shown = cfg.shown()
    text = repr(shown) + repr(cfg)
    for secret in ("prom-secret", "dock-secret", "hub-secret", "dckr_pat_file_secret",
                   "hook-file-secret", "harbor-secret", "ghcr-secret", "hubuser", "robot:"):
        assert secret not in text, secret
    assert shown["upstream.prometheus_url"] == "http://<masked>@127.0.0.1:9090"
    assert shown["docker.host"] == "tcp://<masked>@127.0.0.1:2375"
    assert shown["hub.url"] == "https://<masked>@hub.example"
    assert shown["hub.password_file"] == "<masked>"
    assert shown["webhook.distribution.secret"] == "<masked>"
    assert shown["harbor.instances"] == "https://<masked>@harbor.example (projects team)"


@pytest.mark.parametrize(("doc", "secret"), [
    ("hub:\n  url: 'http://u:url-secret@h/a b'\n", "url-secret"),
    ("hub:\n  url: 'ftp://u:url-secret@h'\n", "url-secret"),
    ("upstream:\n  prometheus_url: 'http://u:url-secret@h/x@y'\n", "url-secret"),
    ("harbor:\n  instances:\n    - {url: 'http://u:url-secret@h?x=1', projects: [a]}\n",
     "url-secret"),
    ("webhook:\n  distribution:\n    secret: 424242\n", "424242"),
    ("registries:\n  ghcr.io: {username: u, password: 424242}\n", "424242"),
    ("harbor:\n  instances:\n    - {url: 'http://h', password: 424242, projects: [a]}\n",
     "424242"),
])
def test_errors_never_quote_a_secret(tmp_path: Path, doc: str, secret: str) -> None:
    f = tmp_path / "c.yml"
    f.write_text(doc)
    _, errors = config.load({}, environ={}, config_file=str(f))
    assert errors
    for err in errors:
        assert secret not in str(err), err


def test_secret_file_and_secret_are_one_setting(tmp_path: Path) -> None:
    (tmp_path / "hook").write_text("from-file\n")
    f = tmp_path / "c.yml"
    f.write_text(f"webhook:\n  distribution:\n    secret: inline\n"
                 f"    secret_file: {tmp_path}/hook\n")
    with pytest.raises(config.ConfigError, match=re.escape(
            "give webhook.distribution.secret or webhook.distribution.secret_file, not both")):
        config.build({}, environ={}, config_file=str(f))
    cfg = config.build({"webhook.distribution.secret_file": str(tmp_path / "hook")}, environ={})
    assert cfg.webhook_distribution_secret == "from-file"
    big = tmp_path / "big"
    big.write_bytes(b"x" * (65 * 1024))
    with pytest.raises(config.ConfigError, match="larger than 64 KiB"):
        config.build({"hub.password_file": str(big)}, environ={})


def test_user_info_never_on_the_page_in_labels_or_logs(exporter_factory,
                                                       tmp_path: Path) -> None:
    """The real exporter with user-info in the Hub URL, a Harbor URL and the Prometheus URL
    of central mode: the credentials work (httpx sends them as basic auth, the Harbor
    stand-in checks them) and appear nowhere. Prometheus is pointed at the Harbor stand-in,
    which answers its query 401: the error httpx raises quotes the URL, user-info included,
    and it is logged (with a traceback at debug level)."""
    hub = DockerHub({"acme/tool": (7, 1, "2026-11-01T00:00:00Z")})
    harbor = Harbor({"team": {"svc": 5}}, login=("robot", "harbor-url-secret"))
    f = tmp_path / "c.yml"
    f.write_text(f"harbor:\n  interval: 1s\n  instances:\n"
                 f"    - url: http://robot:harbor-url-secret@127.0.0.1:{harbor.port}\n"
                 f"      projects: [team]\n")
    secrets = ("harbor-url-secret", "hub-url-secret", "prom-url-secret", "hubuser", "robot:",
               "prom:")
    try:
        local = exporter_factory(
            "--docker.host", NOWHERE, "--upstream.mode", "off", "--log.level", "debug",
            "--config.file", str(f), "--hub.url",
            f"http://hubuser:hub-url-secret@127.0.0.1:{hub.port}",
            "--hub.local-images", "false", "--hub.repositories", "acme/tool",
            "--hub.interval", "1s")
        m = local.wait_metrics(
            lambda m: m.get("docker_hub_repository_pulls_total", repository="acme/tool") == 7
            and m.get("docker_harbor_repository_pulls_total", project="team",
                      repository="svc") == 5, what="Hub and Harbor read with URL credentials")
        labels = [lbl for name in m.names() for lbl, _ in m.select(name)]
        assert {"registry": f"127.0.0.1:{harbor.port}", "project": "team",
                "repository": "svc"} in labels
        page = httpx.get(local.url + "/config", timeout=10).text
        assert f"http://&lt;masked&gt;@127.0.0.1:{hub.port}" in page
        assert f"http://&lt;masked&gt;@127.0.0.1:{harbor.port} (projects team)" in page
        central = exporter_factory(
            "--docker.host", NOWHERE, "--upstream.mode", "central", "--log.level", "debug",
            "--upstream.interval", "1s", "--upstream.prometheus-url",
            f"http://prom:prom-url-secret@127.0.0.1:{harbor.port}")
        wait_for(lambda: "for url 'http://<masked>@127.0.0.1" in central.log(), 30,
                 "the Prometheus query's failure in the log")
        page += httpx.get(central.url + "/config", timeout=10).text
        everything = page + local.log() + central.log() + local.scrape_text() + \
            central.scrape_text()
        for secret in secrets:
            assert secret not in everything, secret
    finally:
        hub.stop()
        harbor.stop()
