"""No configuration input can cause a traceback or put a non-finite or out-of-range value in
force: hostile YAML (deep nesting, alias bombs, huge numbers, dates, duplicate keys), every
setting given every shape, and the same values through flags and environment variables.
``check-config`` runs in-process and must agree with ``build()``."""

from __future__ import annotations

import io
import json
import math
import re
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from exporter import cli, config, values, yamlfile
from exporter.config import SETTINGS, ConfigError

DURATIONS = [s for s in SETTINGS if s.metavar == "DURATION"]
COUNTS = [s for s in SETTINGS if s.metavar == "N"]
NOT_FINITE = [".inf", "-.inf", ".nan", ".NaN", "1e400", "9" * 400, "'9e999s'",
              "100000000000w", "1000000000000000000000ms", "'1e3'"]


def check_config(path: Path) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = cli.main(["check-config", str(path)])
    return code, out.getvalue(), err.getvalue()


def assert_sane(cfg: config.Config) -> None:
    """Every number in force is finite and what its own parser accepts (bounds included)."""
    for s in SETTINGS:
        value = getattr(cfg, s.attr)
        if isinstance(value, float):
            assert math.isfinite(value), s.key
            assert values.MIN_DURATION <= value <= values.MAX_DURATION, s.key
        if isinstance(value, int | float) and not isinstance(value, bool):
            assert s.parse(value) == value, s.key


def verdict(path: Path) -> list[str]:
    """check-config's lines for the file, after checking it agrees with build()."""
    code, out, err = check_config(path)
    lines = err.splitlines()
    try:
        cfg = config.build({}, config_file=str(path))
    except ConfigError as exc:
        assert code == 1, (out, err)
        assert lines and f"{exc.origin}: {exc}" == lines[0]
        for line in lines:
            # FILE: key: reason -- one line each, the key a dotted name or a quoted value.
            assert line.startswith(f"{path}: "), line
            assert re.fullmatch(r"[^\n]+: [^\n]+: [^\n]+", line), line
            assert len(line) < 600, line
        return lines
    assert code == 0 and out == f"{path}: ok\n" and not lines, (out, err)
    assert_sane(cfg)
    return []


# -- hypothesis: YAML shapes and values for every setting --------------------------------------

SNIPPETS = [
    "", "~", "null", "true", "no", "0", "-1", "1", "3.5", "30s", "0s", "-5s", "1h30m", "500ms",
    "0.0001", "0.5ms", "366d", "52w", "2024-01-01", "2024-13-45", "2001-12-14t21:59:43.10-05:00",
    "0x1F", "0o17", "1_000", "1:30", "'30s'", "'32'", "'  32 '", "'٣٢'", "'¹'", "\"a\\nb\"",
    "!!binary aGVsbG8=", "!!set {a, b}", "!!omap [a: 1]", "[]", "{}", "[1, 2]", "[a, b]", "[30s]",
    "{a: 1}", "{1: a}", "{? [a]: b}", "http://u:p@h", "https://hub.docker.com", "unix:///x",
    "ssh://u@h", ":10221", "127.0.0.1:99999", "0/1", "1/0", "'(('", "*undefined", "&a x",
    "!!str 5", "!!float 1e400", "!!int '9'", "local", "central", "debug", "json", "/metrics",
    "linux/amd64", "'x' 'y'", "[", "{", "'", "@x", "`x", "%x", "|\n  x", *NOT_FINITE,
]


def _scalar() -> st.SearchStrategy[str]:
    return (st.sampled_from(SNIPPETS)
            | st.integers().map(str)
            | st.integers(min_value=10 ** 18).map(lambda n: str(n) + "s")
            | st.floats().map(repr)
            | st.text(max_size=12).map(json.dumps)
            | st.integers(1, 300).map(lambda n: "[" * n + "]" * n))


def _flow(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    key = st.sampled_from(["url", "username", "password", "password_file", "projects", "image",
                           "pin", "include", "exclude", "prereleases", "ghcr.io", "x", "1"])
    return (st.lists(inner, max_size=3).map(lambda xs: "[" + ", ".join(xs) + "]")
            | st.dictionaries(key, inner, max_size=3).map(
                lambda d: "{" + ", ".join(f"{k}: {x}" for k, x in d.items()) + "}"))


VALUES = st.recursive(_scalar(), _flow, max_leaves=6)
KEYS = st.sampled_from([s.key for s in SETTINGS] + ["web", "hub", "webhook.distribution",
                                                     "nonsense", "web.listen_adress", "1", "~"])


def _render(entries: list[tuple[str, str]]) -> str:
    """Nested block YAML for dotted keys, each leaf a one-line flow value."""
    tree: dict = {}
    for key, value in entries:
        node = tree
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                break
        else:
            node.setdefault(leaf, value)

    def lines(node: dict, indent: int) -> list[str]:
        out = []
        for k, v in node.items():
            if isinstance(v, dict):
                out += [" " * indent + f"{k}:", *lines(v, indent + 2)]
            else:
                out.append(" " * indent + f"{k}: {v}")
        return out

    return "\n".join(lines(tree, 0)) + "\n"


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(KEYS, VALUES), max_size=8))
@example([("upstream.interval", ".inf")])
@example([("collector.engine.interval", ".nan"), ("docker.timeout", "100000000000w")])
@example([("upstream.concurrency", "9" * 400)])
@example([("harbor.instances", "[{url: http://u:p@h, projects: [a]}, {url: x}, 5]")])
@example([("registries", "{ghcr.io: {username: u, password: 1}, 'a/b': {}}")])
def test_fuzzed_settings_give_a_sane_config_or_one_line_per_error(
        tmp_path_factory: pytest.TempPathFactory, entries: list[tuple[str, str]]) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "c.yml"
    path.write_text(_render(entries))
    verdict(path)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([s for s in SETTINGS if not s.yaml_only]),
       st.sampled_from(SNIPPETS) | st.text(max_size=30))
def test_fuzzed_flags_and_environment_values(setting: config.Setting, text: str) -> None:
    for flags, environ in (({setting.key: text}, {}), ({}, {setting.env: text})):
        try:
            cfg = config.build(flags, environ=environ)
        except ConfigError as exc:
            # Or the setting a value needs beside it: central mode names what it lacks.
            assert exc.key == REQUIRES.get((setting.key, text), setting.key)
            assert "\n" not in str(exc)
            continue
        assert_sane(cfg)


REQUIRES = {("upstream.mode", "central"): "upstream.prometheus_url"}


# -- the shapes that used to end in a traceback -------------------------------------------------

@pytest.mark.parametrize(("text", "key", "why"), [
    ("upstream:\n  interval:\n", "upstream.interval", "an empty value is not a duration"),
    ("upstream:\n  interval: [1, 2]\n", "upstream.interval", "a list is not a duration"),
    ("upstream:\n  interval: 2024-01-01\n", "upstream.interval", "a date is not a duration"),
    ("upstream:\n  interval: {a: 1}\n", "upstream.interval", "a mapping is not a duration"),
    ("docker:\n  timeout: 2024-01-01 10:00:00\n", "docker.timeout", "a date and time"),
    ("web:\n  listen_address: 8080\n", "web.listen_address", "8080 is not a non-empty string"),
    ("upstream:\n  shard: [0, 1]\n", "upstream.shard", "a list is not a shard"),
    ("upstream:\n  include: ['" + "(" * 1100 + ")" * 1100 + "']\n", "upstream.include",
     "too complex"),
    # libyaml: "exceeded maximum nesting depth"; PyYAML's own parser: "nests more than 20"
    ("a: " + "[" * 100_000 + "]" * 100_000 + "\n", "config.file", "nest"),
    ("".join("  " * i + f"k{i}:\n" for i in range(100)), "config.file",
     "nests more than 20 levels deep"),
    ("a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 9) + "]\n"
        for i in range(9)), "config.file", "more than 100000 values once aliases are expanded"),
    ("registries: &r {x: *r}\n", "config.file", "refers to a node that holds it"),
    ("versions:\n  max_tags: " + "9" * 5000 + "\n", "config.file", "4300 digits"),
    ("docker:\n  timeout: 2024-13-45\n", "config.file", "month must be in 1..12"),
    ("log:\n  level: info\n  level: debug\n", "config.file", "key 'level' given twice"),
    ("log: {level: info}\nlog.level: debug\n", "log.level", "given twice"),
    ("? [a]\n: b\n", "config.file", "unhashable key"),
    ("1: a\n", "1", "keys must be strings"),
    ("~: a\n", "null", "keys must be strings"),
    ("2024-01-01: a\n", "2024-01-01", "keys must be strings"),
    ("web: 5\n", "web", "must be a mapping of web.* settings, not 5"),
    ("web: \"a\\nb\"\n", "web", "not 'a\\nb'"),
    ("a: 1\n---\nb: 2\n", "config.file", "another document"),
    ("a: !!python/object:os.system x\n", "config.file", "could not determine a constructor"),
    ("\ufeffweb:\n  listen_address: 1\n", "web.listen_address", "not a non-empty string"),
])
def test_hostile_yaml_is_one_line_naming_the_key(tmp_path: Path, text: str, key: str,
                                                 why: str) -> None:
    path = tmp_path / "c.yml"
    path.write_text(text)
    lines = verdict(path)
    assert lines, "accepted"
    assert any(line.startswith(f"{path}: {key}: ") and why in line for line in lines), lines


def test_huge_and_unreadable_files(tmp_path: Path) -> None:
    big = tmp_path / "big.yml"
    big.write_text("# padding\n" * (yamlfile.MAX_BYTES // 10 + 1))
    assert verdict(big) == [f"{big}: config.file: {big} is larger than 1024 KiB"]
    binary = tmp_path / "bin.yml"
    binary.write_bytes(b"log: \xff\xfe\n")
    assert verdict(binary) == [f"{binary}: config.file: {binary} is not UTF-8 text"]
    nul = tmp_path / "nul.yml"
    nul.write_bytes(b"log: \x00\n")
    assert verdict(nul)[0].startswith(f"{nul}: config.file: {nul} is not valid YAML")
    assert verdict(tmp_path)[0].startswith(f"{tmp_path}: config.file: cannot read")


def test_anchors_within_bounds_still_work(tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    path.write_text("registries:\n  ghcr.io: &creds {username: bot, password: pw}\n"
                    "  quay.io: *creds\n"
                    "hub:\n  interval: &slow 2h\nharbor:\n  interval: *slow\n")
    assert verdict(path) == []
    cfg = config.build({}, environ={}, config_file=str(path))
    assert [h for h, _ in cfg.registries] == ["ghcr.io", "quay.io"]
    assert cfg.hub_interval == cfg.harbor_interval == 7200


# -- bounds ------------------------------------------------------------------------------------

@pytest.mark.parametrize("setting", DURATIONS, ids=lambda s: s.key)
@pytest.mark.parametrize("text", NOT_FINITE)
def test_no_duration_is_infinite_or_huge(tmp_path: Path, setting: config.Setting,
                                         text: str) -> None:
    path = tmp_path / "c.yml"
    path.write_text(_render([(setting.key, text)]))
    lines = verdict(path)
    assert len(lines) == 1 and lines[0].startswith(f"{path}: {setting.key}: "), lines
    with pytest.raises(ConfigError, match=re.escape(setting.key)):
        config.build({setting.key: text.strip("'")}, environ={})


@pytest.mark.parametrize("setting", DURATIONS, ids=lambda s: s.key)
def test_duration_bounds(setting: config.Setting) -> None:
    low = 1.0 if setting.key == "upstream.interval" else 0.001
    format_low = values.format_duration(low)
    for ok, text in ((True, "365d"), (True, "52w"), (False, "365d1ms"), (False, "53w"),
                     (True, format_low), (False, "0.0009"),
                     (setting.key != "upstream.interval", "999ms")):
        try:
            value = setting.parse(text)
        except ValueError as exc:
            assert not ok, (text, exc)
            assert "too long: at most 365d" in str(exc) or \
                f"too short: at least {format_low}" in str(exc) or "greater than zero" in str(exc)
        else:
            assert ok and low <= value <= 365 * 86400, text


@pytest.mark.parametrize("setting", COUNTS, ids=lambda s: s.key)
def test_counts_within_their_documented_range(setting: config.Setting) -> None:
    high = 1_000_000 if setting.key == "versions.max_tags" else 1024
    assert f"1 to {high}" in setting.help
    for text, ok in (("1", True), (str(high), True), ("0", False), (str(high + 1), False),
                     ("9" * 400, False), ("-1", False), ("1.5", False), ("٣", False),
                     ("1_0", False), (" 7 ", True)):
        try:
            assert setting.parse(text) == int(text) and ok, text
        except ValueError as exc:
            assert not ok, text
            assert "\n" not in str(exc) and len(str(exc)) < 120
    for value in (True, 1.0, float("inf"), None, [1]):
        with pytest.raises(ValueError):
            setting.parse(value)
