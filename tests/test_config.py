"""Configuration: flags, environment and YAML agree, and bad input names the bad key."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exporter import config
from exporter.config import ConfigError, build, parse_duration


@pytest.mark.parametrize(("text", "seconds"), [
    ("30s", 30), ("5m", 300), ("1h30m", 5400), ("500ms", 0.5), ("2d", 172800), ("1w", 604800),
    ("15", 15), (15, 15), (0.5, 0.5), ("1.5h", 5400),
])
def test_durations(text, seconds) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "five", "5 m", "5x", "-5s", "0s", "m5", "5m3", True])
def test_bad_durations(text) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_defaults_work_with_no_configuration() -> None:
    cfg = build({}, environ={})
    assert cfg.web_listen_address == ":10221"
    assert cfg.web_telemetry_path == "/metrics"
    assert cfg.docker_host == "unix:///var/run/docker.sock"
    assert cfg.collector_disk_interval == 300
    assert cfg.collector_engine_interval == 15
    assert cfg.listen() == ("", 10221)


def test_default_host_is_the_first_engine_socket_that_exists(tmp_path: Path,
                                                              monkeypatch) -> None:
    docker, rootful = tmp_path / "docker.sock", tmp_path / "podman-root.sock"
    runtime = tmp_path / "user-runtime"
    monkeypatch.setattr(config, "ENGINE_SOCKETS", (
        str(docker), str(rootful), "{runtime}/podman/podman.sock"))
    env = {"XDG_RUNTIME_DIR": str(runtime)}
    assert build({}, environ=env).docker_host == "unix:///var/run/docker.sock"  # none exists
    (runtime / "podman").mkdir(parents=True)
    (runtime / "podman" / "podman.sock").touch()
    assert build({}, environ=env).docker_host == f"unix://{runtime}/podman/podman.sock"
    rootful.touch()
    assert build({}, environ=env).docker_host == f"unix://{rootful}"
    docker.touch()
    assert build({}, environ=env).docker_host == f"unix://{docker}"
    assert build({}, environ={**env, "DOCKER_HOST": "tcp://h:2375"}).docker_host == \
        "tcp://h:2375"
    assert build({"docker.host": "unix:///x.sock"}, environ=env).docker_host == "unix:///x.sock"


def test_precedence_flag_over_env_over_file(tmp_path: Path) -> None:
    f = tmp_path / "c.yml"
    f.write_text("web:\n  telemetry_path: /file\n  listen_address: 127.0.0.1:1\n"
                 "collector:\n  disk:\n    interval: 10m\n")
    env = {"DOCKER_HYGIENE_WEB_TELEMETRY_PATH": "/env", "DOCKER_HOST": "tcp://1.2.3.4:2375"}
    cfg = build({"web.listen_address": "127.0.0.1:2"}, environ=env, config_file=str(f))
    assert cfg.web_telemetry_path == "/env"
    assert cfg.web_listen_address == "127.0.0.1:2"
    assert cfg.collector_disk_interval == 600
    assert cfg.docker_host == "tcp://1.2.3.4:2375"  # DOCKER_HOST is the default docker.host


def test_config_file_from_environment(tmp_path: Path) -> None:
    f = tmp_path / "c.yml"
    f.write_text("log: {format: json}\n")
    assert build({}, environ={"DOCKER_HYGIENE_CONFIG_FILE": str(f)}).log_format == "json"


@pytest.mark.parametrize(("doc", "key", "why"), [
    ("web:\n  listen_adress: ':1'\n", "web.listen_adress", "did you mean web.listen_address"),
    ("collector:\n  disk:\n    interval: soon\n", "collector.disk.interval", "not a duration"),
    ("log:\n  level: loud\n", "log.level", "not one of debug, info, warn, error"),
    ("docker:\n  host: /var/run/docker.sock\n", "docker.host", "unix:///path"),
    ("web:\n  telemetry_path: metrics\n", "web.telemetry_path", "must start with /"),
    ("web:\n  listen_address: ':99999'\n", "web.listen_address", "not a listen address"),
    ("nonsense: 1\n", "nonsense", "unknown key"),
    ("- a\n- b\n", "config.file", "mapping"),
    ("web: [\n", "config.file", "not valid YAML at line"),
])
def test_bad_config_names_the_key(tmp_path: Path, doc: str, key: str, why: str) -> None:
    f = tmp_path / "c.yml"
    f.write_text(doc)
    with pytest.raises(ConfigError) as err:
        build({}, environ={}, config_file=str(f))
    assert err.value.key == key
    assert why in str(err.value)


def test_bad_environment_value_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"collector\.engine\.interval"):
        build({}, environ={"DOCKER_HYGIENE_COLLECTOR_ENGINE_INTERVAL": "often"})


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "exporter", *args], capture_output=True,
                          text=True, timeout=30)


def test_check_config_command(tmp_path: Path) -> None:
    good = tmp_path / "good.yml"
    good.write_text("web:\n  listen_address: 127.0.0.1:10221\ncollector:\n  disk:\n"
                    "    interval: 10m\n")
    out = _cli("check-config", str(good))
    assert out.returncode == 0 and out.stdout.strip() == f"{good}: ok"
    bad = tmp_path / "bad.yml"
    bad.write_text("collector:\n  disk:\n    intervall: 10m\n")
    out = _cli("check-config", str(bad))
    assert out.returncode == 1
    assert out.stderr.strip() == (f"{bad}: collector.disk.intervall: unknown key "
                                  "(did you mean collector.disk.interval?)")
    out = _cli("check-config", str(tmp_path / "missing.yml"))
    assert out.returncode == 1 and "cannot read" in out.stderr


def test_bad_flag_is_a_clear_startup_error() -> None:
    out = _cli("--collector.disk.interval", "fast")
    assert out.returncode == 2
    assert "configuration error: collector.disk.interval:" in out.stderr


def test_versions_pin_defaults_to_major_from_flag_env_and_file(tmp_path: Path) -> None:
    assert build({}, environ={}).versions_pin == "major"
    f = tmp_path / "c.yml"
    f.write_text("versions:\n  pin: minor\n")
    assert build({}, environ={}, config_file=str(f)).versions_pin == "minor"
    env = {"DOCKER_HYGIENE_VERSIONS_PIN": "none"}
    assert build({}, environ=env, config_file=str(f)).versions_pin == "none"
    assert build({"versions.pin": "major"}, environ=env, config_file=str(f)).versions_pin == \
        "major"


def test_bad_versions_pin_names_the_key(tmp_path: Path) -> None:
    f = tmp_path / "c.yml"
    f.write_text("versions:\n  pin: patch\n")
    with pytest.raises(ConfigError) as err:
        build({}, environ={}, config_file=str(f))
    assert (err.value.key, err.value.reason) == (
        "versions.pin", "'patch' is not one of none, major, minor")
    with pytest.raises(ConfigError, match=r"^versions\.pin: 'all' is not one of"):
        build({}, environ={"DOCKER_HYGIENE_VERSIONS_PIN": "all"})
    out = _cli("--versions.pin", "Major")
    assert out.returncode == 2
    assert "configuration error: versions.pin: 'Major' is not one of none, major, minor " \
           "(from --versions.pin)" in out.stderr, out.stderr


def test_every_setting_has_flag_env_and_yaml_key() -> None:
    for s in config.SETTINGS:
        assert s.flag == "--" + s.key.replace("_", "-")
        assert s.env.startswith("DOCKER_HYGIENE_") and s.env.isupper()
        assert hasattr(config.Config(), s.attr)


# Secrets read from a file are named for what they hold; every other attribute is its key.
SECRET_ATTRS = {"hub.password_file": "hub_password",
                "webhook.distribution.secret_file": "webhook_distribution_secret"}


def test_attributes_are_keys_except_secrets_from_files() -> None:
    for s in config.SETTINGS:
        assert s.attr == SECRET_ATTRS.get(s.key, s.key.replace(".", "_")), s.key


scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
keys = st.sampled_from(["web", "listen_address", "collector", "disk", "interval", "log", "x"])
docs = st.recursive(scalars, lambda inner: st.dictionaries(keys | st.text(max_size=5), inner,
                                                          max_size=3), max_leaves=8)


@given(docs)
def test_fuzzed_config_gives_a_config_or_a_config_error(doc) -> None:
    try:
        if not isinstance(doc, dict):
            raise ConfigError("config.file", "not a mapping")
        config.build(config.flatten(doc), environ={})
    except ConfigError:
        pass


@given(st.binary(max_size=200))
def test_fuzzed_config_files(tmp_path_factory, data: bytes) -> None:
    f = tmp_path_factory.mktemp("fuzz") / "c.yml"
    f.write_bytes(data)
    with contextlib.suppress(ConfigError):
        config.build({}, environ={}, config_file=str(f))
