"""The command line: settings flags count wherever they stand, for every command; a flag is
never dropped (given twice or to a command it does not apply to, it is refused); check-config
reports every error, one line each."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.services import ROOT

NOWHERE = "unix:///nonexistent.sock"


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith("DOCKER_HYGIENE_") and k != "DOCKER_HOST"}
    return subprocess.run([sys.executable, "-m", "exporter", *args], capture_output=True,
                          text=True, timeout=60, cwd=ROOT, env={**clean, **(env or {})})


def around(command: list[str], flags: list[str]) -> list[list[str]]:
    """The flags before the command, and after it."""
    return [[*flags, *command], [*command, *flags]]


@pytest.mark.parametrize("where", ["before", "after"])
def test_report_honours_docker_host_before_and_after(where: str) -> None:
    args = around(["report"], ["--docker.host", NOWHERE])[where == "after"]
    out = cli(*args)
    assert out.returncode == 1, out
    assert f"the Docker Engine at {NOWHERE}" in out.stderr


@pytest.mark.parametrize("command", [[], ["report"]], ids=["serve", "report"])
@pytest.mark.parametrize("where", ["before", "after"])
def test_bad_config_file_and_flags_stop_every_command(tmp_path: Path, command: list[str],
                                                      where: str) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text("upstream:\n  interval: .inf\n")
    out = cli(*around(command, ["--config.file", str(bad)])[where == "after"])
    assert out.returncode == 2, out
    assert out.stderr == (f"docker-hygiene-exporter: configuration error: upstream.interval: "
                          f"inf is too long: at most 365d (from {bad})\n")
    out = cli(*around(command, ["--upstream.concurrency", "0"])[where == "after"])
    assert out.returncode == 2, out
    assert out.stderr == ("docker-hygiene-exporter: configuration error: upstream.concurrency: "
                          "'0' must be between 1 and 1024 (from --upstream.concurrency)\n")


@pytest.mark.parametrize("where", ["before", "after"])
def test_check_config_honours_flags_before_and_after(tmp_path: Path, where: str) -> None:
    good = tmp_path / "good.yml"
    good.write_text("upstream:\n  interval: 1h\n")
    bad = tmp_path / "bad.yml"
    bad.write_text("upstream:\n  interval: []\n")
    for file, flags, code, text in [
        ([], ["--config.file", str(good)], 0, f"{good}: ok\n"),
        ([], ["--config.file", str(bad)], 1,
         f"{bad}: upstream.interval: a list is not a duration"),
        ([str(good)], ["--upstream.mode", "central"], 1,
         "--upstream.mode: upstream.prometheus_url: central mode needs a Prometheus"),
        ([str(good)], ["--log.level", "loud"], 1,
         "--log.level: log.level: 'loud' is not one of debug, info, warn, error\n"),
    ]:
        out = cli(*around(["check-config", *file], flags)[where == "after"])
        assert out.returncode == code, out
        assert text in (out.stdout if code == 0 else out.stderr), out


def test_check_config_reports_the_environment_too(tmp_path: Path) -> None:
    good = tmp_path / "good.yml"
    good.write_text("")
    out = cli("check-config", str(good), env={"DOCKER_HYGIENE_HUB_INTERVAL": "forever",
                                               "DOCKER_HOST": "/var/run/docker.sock"})
    assert out.returncode == 1
    assert out.stderr.splitlines() == [
        "$DOCKER_HYGIENE_HUB_INTERVAL: hub.interval: 'forever' is not a duration: use a "
        "number with a unit (ms, s, m, h, d, w), e.g. 30s, 5m or 1h30m",
        "$DOCKER_HOST: docker.host: '/var/run/docker.sock' is not a Docker host: use "
        "unix:///path or tcp://host:port"]
    out = cli("check-config", env={"DOCKER_HYGIENE_CONFIG_FILE": str(good)})
    assert (out.returncode, out.stdout) == (0, f"{good}: ok\n")


def test_check_config_needs_one_file(tmp_path: Path) -> None:
    out = cli("check-config")
    assert out.returncode == 2 and "Give FILE or --config.file" in out.stderr
    out = cli("check-config", "a.yml", "--config.file", "b.yml")
    assert out.returncode == 2 and "not both" in out.stderr


def test_check_config_reports_every_error_one_line_each(tmp_path: Path) -> None:
    f = tmp_path / "c.yml"
    f.write_text(
        "web:\n  listen_adress: ':1'\n"
        "collector:\n  engine:\n    interval: .inf\n  disk:\n    interval: .nan\n"
        "upstream:\n  concurrency: 100000000000000000000000000000000000\n  interval: 500ms\n"
        "hub:\n  url: 'ftp://bot:hunter2@hub.example'\n"
        "harbor:\n  instances:\n    - {url: 'http://h', projects: []}\n    - 5\n"
        "    - {url: 'https://ok.example', projects: [a]}\n"
        "log:\n  level: loud\n")
    out = cli("check-config", str(f))
    assert out.returncode == 1
    assert out.stdout == ""
    assert out.stderr.splitlines() == [
        f"{f}: web.listen_adress: unknown key (did you mean web.listen_address?)",
        f"{f}: collector.engine.interval: inf is too long: at most 365d",
        f"{f}: collector.disk.interval: nan is not a duration: it must be a finite number",
        f"{f}: upstream.concurrency: a number that large must be between 1 and 1024",
        f"{f}: upstream.interval: '500ms' is too short: at least 1s",
        f"{f}: hub.url: 'ftp://<masked>@hub.example' is not an http(s) URL: use "
        "http(s)://host[:port][/path]",
        f"{f}: harbor.instances: [0].projects: a list of project names is required",
        f"{f}: harbor.instances: [1]: must be a mapping",
        f"{f}: log.level: 'loud' is not one of debug, info, warn, error",
    ]
    assert "hunter2" not in out.stderr


@pytest.mark.parametrize("command", [[], ["report"], ["check-config", "x.yml"],
                                     ["bundle", "-o", "out"]],
                         ids=["serve", "report", "check-config", "bundle"])
@pytest.mark.parametrize("flag", [["--docker.host", NOWHERE], ["--config.file", "a.yml"]])
def test_a_flag_given_twice_is_refused(command: list[str], flag: list[str]) -> None:
    # Before and after the command, and twice on the same side.
    for args in ([*flag, *command, *flag], [*flag, *flag, *command], [*command, *flag, *flag]):
        out = cli(*args)
        assert out.returncode == 2, (args, out)
        assert f"{flag[0]} is given twice" in out.stderr, out.stderr
        assert out.stderr.splitlines()[-1].endswith(f"error: {flag[0]} is given twice")


@pytest.mark.parametrize("flag", [["--log.level", "debug"], ["--config.file", "c.yml"],
                                  ["--docker.host", NOWHERE]])
@pytest.mark.parametrize("where", ["before", "after"])
def test_bundle_refuses_settings_flags(tmp_path: Path, flag: list[str], where: str) -> None:
    out = cli(*around(["bundle", "-o", str(tmp_path / "b")], flag)[where == "after"])
    assert out.returncode == 2, out
    assert out.stderr == (f"docker-hygiene-exporter: bundle: {flag[0]} does not apply: bundle "
                          "writes the packaged files and reads no configuration\n")
    assert not (tmp_path / "b").exists()


def test_unknown_flags_and_abbreviations_are_refused() -> None:
    for args in (["--docker.hos", NOWHERE, "report"], ["report", "--docker.hos", NOWHERE],
                 ["report", "--nonsense"], ["check-config", "--log.lev", "debug", "c.yml"]):
        out = cli(*args)
        assert out.returncode == 2, (args, out)
        assert "unrecognized arguments" in out.stderr or "invalid choice" in out.stderr, out


def test_help_lists_the_flags_for_every_command() -> None:
    for command in ([], ["report"], ["check-config"]):
        out = cli(*command, "--help")
        assert out.returncode == 0
        assert "--docker.host URL" in out.stdout and "--config.file FILE" in out.stdout
    out = cli("bundle", "--help")
    assert out.returncode == 0 and "--docker.host" not in out.stdout
