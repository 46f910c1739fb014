"""Configuration: one table of settings feeds flags, YAML keys, environment variables and docs.

Precedence, highest first: command-line flag, environment variable, config file, default.
Every setting has the same dotted name everywhere: the flag ``--web.listen-address``, the YAML
key ``web: {listen_address: ...}`` and the variable ``DOCKER_HYGIENE_WEB_LISTEN_ADDRESS``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

ENV_PREFIX = "DOCKER_HYGIENE_"
DEFAULT_PORT = 10221
DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"


class ConfigError(ValueError):
    """A bad setting; the message names the key and says why."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str | int | float) -> float:
    """Parse a Prometheus-style duration ("30s", "5m", "1h30m") into seconds.

    Plain numbers are taken as seconds so YAML ``interval: 30`` also works.
    """
    if isinstance(text, bool):
        raise ValueError(f"{text!r} is not a duration")
    if isinstance(text, int | float):
        seconds = float(text)
    else:
        s = text.strip()
        if re.fullmatch(r"\d+(\.\d+)?", s):
            seconds = float(s)
        else:
            pos, seconds = 0, 0.0
            for m in _DURATION_RE.finditer(s):
                if m.start() != pos:
                    break
                seconds += float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
                pos = m.end()
            if pos != len(s) or not s:
                raise ValueError(
                    f"{text!r} is not a duration: use a number with a unit "
                    "(ms, s, m, h, d, w), e.g. 30s, 5m or 1h30m"
                )
    if seconds <= 0:
        raise ValueError(f"{text!r} is not a duration: it must be greater than zero")
    return seconds


def format_duration(seconds: float) -> str:
    """Inverse of parse_duration for display: 300 -> "5m"."""
    for unit in ("w", "d", "h", "m", "s"):
        size = _UNIT_SECONDS[unit]
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds * 1000)}ms"


def _parse_listen_address(text: str) -> str:
    host, sep, port = str(text).rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r} is not a listen address: use HOST:PORT or :PORT")
    if host.startswith("[") != host.endswith("]"):
        raise ValueError(f"{text!r} is not a listen address: unbalanced IPv6 brackets")
    return str(text)


def _parse_path(text: str) -> str:
    if not isinstance(text, str) or not text.startswith("/"):
        raise ValueError(f"{text!r} is not a URL path: it must start with /")
    return text


def _choice(*choices: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if value not in choices:
            raise ValueError(f"{value!r} is not one of {', '.join(choices)}")
        return str(value)

    return parse


def _string(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{value!r} is not a non-empty string")
    return value


def _docker_host(value: Any) -> str:
    value = _string(value)
    if not re.match(r"^(unix|tcp|http|https|ssh|npipe)://", value):
        raise ValueError(f"{value!r} is not a Docker host: use unix:///path or tcp://host:port")
    return value


@dataclass(frozen=True)
class Setting:
    """One setting: its dotted key, parser, default and help text."""

    key: str
    parse: Callable[[Any], Any]
    default: Any
    help: str
    metavar: str = "VALUE"
    show: Callable[[Any], str] = str

    @property
    def flag(self) -> str:
        return "--" + self.key.replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.key.replace(".", "_").replace("-", "_").upper()

    @property
    def path(self) -> tuple[str, ...]:
        return tuple(self.key.split("."))


def _default_docker_host() -> str:
    return os.environ.get("DOCKER_HOST") or DEFAULT_DOCKER_HOST


SETTINGS: tuple[Setting, ...] = (
    Setting("web.listen_address", _parse_listen_address, f":{DEFAULT_PORT}",
            "Address to listen on for the web interface and telemetry.", "HOST:PORT"),
    Setting("web.telemetry_path", _parse_path, "/metrics",
            "Path under which to expose metrics.", "PATH"),
    Setting("docker.host", _docker_host, None,
            "Docker Engine endpoint (default: $DOCKER_HOST, else "
            f"{DEFAULT_DOCKER_HOST}). TLS follows DOCKER_TLS_VERIFY and DOCKER_CERT_PATH.", "URL"),
    Setting("docker.timeout", parse_duration, 30.0,
            "Timeout of one Engine API call (except /system/df).", "DURATION",
            format_duration),
    Setting("collector.engine.interval", parse_duration, 15.0,
            "How often images and containers are read from the engine.", "DURATION",
            format_duration),
    Setting("collector.disk.interval", parse_duration, 300.0,
            "How often /system/df is called; it walks every layer and volume, so keep it slow.",
            "DURATION", format_duration),
    Setting("collector.disk.timeout", parse_duration, 600.0,
            "Timeout of one /system/df call.", "DURATION", format_duration),
    Setting("log.level", _choice("debug", "info", "warn", "error"), "info",
            "Only log messages with the given severity or above.", "LEVEL"),
    Setting("log.format", _choice("logfmt", "json"), "logfmt",
            "Output format of log messages.", "FORMAT"),
)

SETTINGS_BY_KEY: dict[str, Setting] = {s.key: s for s in SETTINGS}


@dataclass(frozen=True)
class Config:
    """The settings in force, after flags, environment and file were merged and checked."""

    web_listen_address: str = f":{DEFAULT_PORT}"
    web_telemetry_path: str = "/metrics"
    docker_host: str = field(default_factory=_default_docker_host)
    docker_timeout: float = 30.0
    collector_engine_interval: float = 15.0
    collector_disk_interval: float = 300.0
    collector_disk_timeout: float = 600.0
    log_level: str = "info"
    log_format: str = "logfmt"
    config_file: str | None = None

    def listen(self) -> tuple[str, int]:
        host, _, port = self.web_listen_address.rpartition(":")
        return host.strip("[]") or "", int(port)

    def shown(self) -> dict[str, str]:
        """The settings in force as display strings, for the landing page and logs."""
        out = {}
        for s in SETTINGS:
            value = getattr(self, _attr(s.key))
            out[s.key] = s.show(value) if value is not None else ""
        return out


def _attr(key: str) -> str:
    return key.replace(".", "_")


def _flatten(doc: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Turn nested YAML into dotted keys, rejecting keys we do not know."""
    out: dict[str, Any] = {}
    for raw_key, value in doc.items():
        if not isinstance(raw_key, str):
            raise ConfigError(f"{prefix}{raw_key!r}", "keys must be strings")
        key = prefix + raw_key
        if key in SETTINGS_BY_KEY:
            out[key] = value
        elif isinstance(value, Mapping) and any(k.startswith(key + ".") for k in SETTINGS_BY_KEY):
            out.update(_flatten(value, key + "."))
        else:
            raise ConfigError(key, "unknown key" + _suggest(key))
    return out


def _suggest(key: str) -> str:
    import difflib

    match = difflib.get_close_matches(key, SETTINGS_BY_KEY, n=1, cutoff=0.7)
    return f" (did you mean {match[0]}?)" if match else ""


def read_file(path: str) -> dict[str, Any]:
    """Read and flatten a YAML config file; raises ConfigError naming the problem."""
    try:
        with open(path, encoding="utf-8") as fh:
            doc = yaml.safe_load(fh)
    except OSError as exc:
        raise ConfigError("config.file", f"cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError("config.file", f"{path} is not valid YAML{where}") from None
    if doc is None:
        return {}
    if not isinstance(doc, Mapping):
        raise ConfigError("config.file", f"{path} must hold a mapping of settings")
    return _flatten(doc)


def read_env(environ: Mapping[str, str]) -> dict[str, Any]:
    return {s.key: environ[s.env] for s in SETTINGS if environ.get(s.env) not in (None, "")}


def build(
    flags: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    config_file: str | None = None,
) -> Config:
    """Merge defaults < file < environment < flags, parse every value, and return a Config."""
    environ = os.environ if environ is None else environ
    config_file = config_file or environ.get(ENV_PREFIX + "CONFIG_FILE") or None
    raw: dict[str, Any] = {}
    if config_file:
        raw.update(read_file(config_file))
    raw.update(read_env(environ))
    raw.update({k: v for k, v in (flags or {}).items() if v is not None})
    values: dict[str, Any] = {}
    for key, value in raw.items():
        setting = SETTINGS_BY_KEY[key]
        try:
            values[_attr(key)] = setting.parse(value)
        except (ValueError, TypeError) as exc:
            raise ConfigError(key, str(exc)) from None
    if "docker_host" not in values:
        values["docker_host"] = _default_docker_host()
    return Config(config_file=config_file, **values)
