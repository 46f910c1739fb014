"""Parsers of configuration values, and masking of what they must not show.

Each parser takes whatever a YAML file, an environment variable or a flag gives (a string, a
number, a list, a mapping, a date, ``None``...) and returns the value in force or raises
``ValueError`` saying why, without a traceback for any input. Error messages quote values
through ``describe()``: short, one line, URL user-info masked, never a secret.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any
from urllib.parse import urlsplit

from exporter.registry.credentials import Credentials
from exporter.yamlfile import read_text

MASK = "<masked>"
# Durations: at least the smallest unit parsed (a loop waiting less is a busy loop), at most a
# year (finite: Event.wait(inf) raises OverflowError and kills the loop's thread; a year is
# far below threading.TIMEOUT_MAX and keeps time arithmetic exact to the millisecond).
MIN_DURATION = 0.001
MAX_DURATION = 365 * 86400.0
MAX_SECRET_BYTES = 64 * 1024  # a password or token file; /dev/zero must not fill memory

# User-info ends where the authority does: it holds no /, ? or # (RFC 3986), so an @ in a
# path or query is left alone.
_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/?#\s]*@")


def redact_url(text: str) -> str:
    """``text`` with the user-info of every URL in it masked: ``https://u:p@h/x`` gives
    ``https://<masked>@h/x``. For anything shown or logged that may hold a configured URL
    (httpx quotes the URL, user-info included, in its errors)."""
    return _USERINFO.sub(rf"\1{MASK}@", text)


def describe(value: Any) -> str:
    """A value as an error message quotes it: short, one line, URL user-info masked."""
    if value is None:
        return "an empty value"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple | set | frozenset):
        return "a list"
    if isinstance(value, datetime):
        return "a date and time"
    if isinstance(value, date):
        return "a date"
    if isinstance(value, bytes):
        return "binary data"
    if isinstance(value, int):
        return str(value) if value.bit_length() < 64 else "a number that large"
    if isinstance(value, float):
        return repr(value)
    text = redact_url(str(value))
    return repr(text if len(text) <= 60 else text[:57] + "...")


_DURATION_RE = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d|w)")
_NUMBER_RE = re.compile(r"[0-9]+(?:\.[0-9]+)?")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: Any, low: float = MIN_DURATION, high: float = MAX_DURATION) -> float:
    """Parse a Prometheus-style duration ("30s", "5m", "1h30m") into seconds, between
    ``low`` and ``high``. Plain numbers are taken as seconds so YAML ``interval: 30`` works."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"{describe(value)} is not a duration: use a number with a unit "
                         "(ms, s, m, h, d, w), e.g. 30s, 5m or 1h30m")
    if isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:
            seconds = math.inf
    else:
        s = value.strip()
        if _NUMBER_RE.fullmatch(s):
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
                    f"{describe(value)} is not a duration: use a number with a unit "
                    "(ms, s, m, h, d, w), e.g. 30s, 5m or 1h30m")
    if math.isnan(seconds):
        raise ValueError(f"{describe(value)} is not a duration: it must be a finite number")
    if seconds <= 0:
        raise ValueError(f"{describe(value)} is not a duration: it must be greater than zero")
    if seconds < low:
        raise ValueError(f"{describe(value)} is too short: at least {format_duration(low)}")
    if seconds > high:
        raise ValueError(f"{describe(value)} is too long: at most {format_duration(high)}")
    return seconds


def duration(low: float = MIN_DURATION, high: float = MAX_DURATION) -> Callable[[Any], float]:
    def parse(value: Any) -> float:
        return parse_duration(value, low, high)

    return parse


def format_duration(seconds: float) -> str:
    """Inverse of parse_duration for display: 300 -> "5m"."""
    for unit in ("w", "d", "h", "m", "s"):
        size = _UNIT_SECONDS[unit]
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    if (seconds * 1000) % 1 == 0:
        return f"{int(seconds * 1000)}ms"
    return f"{seconds:g}s"


def listen_address(value: Any) -> str:
    text = string(value)
    host, sep, port = text.rpartition(":")
    if not sep or not (port.isascii() and port.isdigit() and len(port) <= 5) or not (
            0 < int(port) < 65536):
        raise ValueError(f"{describe(value)} is not a listen address: use HOST:PORT or :PORT")
    if host.startswith("[") != host.endswith("]"):
        raise ValueError(f"{describe(value)} is not a listen address: unbalanced IPv6 brackets")
    return text


def url_path(value: Any) -> str:
    if not isinstance(value, str) or not value.startswith("/"):
        raise ValueError(f"{describe(value)} is not a URL path: it must start with /")
    if any(c.isspace() or not c.isprintable() for c in value):
        raise ValueError(f"{describe(value)} is not a URL path: no spaces or control characters")
    return value


def choice(*choices: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if not isinstance(value, str) or value not in choices:
            raise ValueError(f"{describe(value)} is not one of {', '.join(choices)}")
        return value

    return parse


def string(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{describe(value)} is not a non-empty string")
    return value


def optional_string(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{describe(value)} is not a string")
    return value


def secret_string(value: Any) -> str:
    """A secret given inline: the error never quotes it."""
    if not isinstance(value, str):
        raise ValueError("must be a string (value not shown: it is a secret)")
    return value


def docker_host(value: Any) -> str:
    text = string(value)
    if not re.match(r"^(unix|tcp|http|https|ssh|npipe)://", text):
        raise ValueError(f"{describe(value)} is not a Docker host: use unix:///path or "
                         "tcp://host:port")
    return text


def cri_endpoint(value: Any) -> str:
    """"" (read Docker or Podman), or a CRI socket as the kubelet names it."""
    text = "" if value in ("", None) else string(value)
    if text and not re.fullmatch(r"unix:///\S+", text):
        raise ValueError(f"{describe(value)} is not a CRI endpoint: use "
                         "unix:///run/containerd/containerd.sock")
    return text


def whole(low: int, high: int) -> Callable[[Any], int]:
    """A whole number within [low, high], from YAML or as ASCII digits from a flag."""

    def parse(value: Any) -> int:
        if isinstance(value, str) and re.fullmatch(r"[0-9]{1,30}", value.strip()):
            number = int(value)
        elif isinstance(value, int) and not isinstance(value, bool):
            number = value
        else:
            raise ValueError(f"{describe(value)} is not a whole number")
        if not low <= number <= high:
            raise ValueError(f"{describe(value)} must be between {low} and {high}")
        return number

    return parse


def string_list(value: Any) -> tuple[str, ...]:
    """A YAML list, or a comma-separated string from a flag or the environment."""
    if isinstance(value, str):
        return tuple(v.strip() for v in value.split(",") if v.strip())
    if isinstance(value, list) and all(isinstance(v, str) and v for v in value):
        return tuple(value)
    raise ValueError(f"{describe(value)} is not a list of non-empty strings")


def regex(value: Any) -> str:
    """A regular expression; patterns whose compilation overflows are refused too."""
    text = optional_string(value)
    try:
        re.compile(text)
    except re.error as exc:
        raise ValueError(f"{describe(text)} is not a regular expression: {exc}") from None
    except (RecursionError, OverflowError):
        raise ValueError(f"{describe(text)} is not a regular expression: too complex") from None
    return text


def regex_list(value: Any) -> tuple[str, ...]:
    items = string_list(value)
    for item in items:
        regex(item)
    return items


def platform(value: Any) -> str:
    text = optional_string(value)
    if text and not re.fullmatch(r"[a-z0-9]+/[a-z0-9_]+(/[a-z0-9]+)?", text):
        raise ValueError(f"{describe(value)} is not a platform: use os/arch or os/arch/variant")
    return text


def boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.lower() in ("true", "1", "yes")
    raise ValueError(f"{describe(value)} is not true or false")


def shard(value: Any) -> str:
    m = re.fullmatch(r"([0-9]{1,6})/([0-9]{1,6})", value) if isinstance(value, str) else None
    if not m or int(m.group(2)) < 1 or int(m.group(1)) >= int(m.group(2)):
        raise ValueError(f"{describe(value)} is not a shard: use i/n with 0 <= i < n "
                         "(n at most 999999), e.g. 0/3")
    return value


def url(value: Any) -> str:
    """An http(s) base URL that paths are appended to. User-info is allowed (httpx sends it
    as basic auth) and masked wherever the URL is shown; an ``@`` anywhere else is refused so
    that masking can find where the user-info ends."""
    text = string(value)
    bad = f"{describe(text)} is not an http(s) URL"
    if any(c.isspace() or not c.isprintable() for c in text):
        raise ValueError(f"{bad}: no spaces or control characters")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise ValueError(bad) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{bad}: use http(s)://host[:port][/path]")
    if port == 0:
        raise ValueError(f"{bad}: port 0")
    if parts.query or parts.fragment or "?" in text or "#" in text:
        raise ValueError(f"{bad}: a base URL has no ?query or #fragment")
    if "@" in parts.path:
        raise ValueError(f"{bad}: write @ outside the user-info as %40")
    return text.rstrip("/")


def optional_url(value: Any) -> str:
    return url(value) if value != "" else ""


def read_secret(path: Any) -> str:
    """The content of a secret file, stripped; read at start-up so a missing file is a
    start-up error. The message names the file, never its content."""
    if not isinstance(path, str) or not path:
        raise ValueError(f"{describe(path)} is not a file path")
    return read_text(path, MAX_SECRET_BYTES, describe(path)).strip()


def secret_file(value: Any) -> str:
    """A file holding a secret: the value in force is the secret it holds."""
    return read_secret(value) if value != "" else ""


def mask(value: Any) -> str:
    return MASK if value else ""


def show_list(value: tuple[str, ...]) -> str:
    return ", ".join(value)


def web_config_file(value: Any) -> str:
    """Loaded once here so a bad file is a start-up error naming the key inside it."""
    from exporter.web.webconfig import WebConfigError, load

    path = string(value)
    try:
        load(path)
    except WebConfigError as exc:
        raise ValueError(str(exc)) from None
    return path


class _Entries(ValueError):
    """Several independent entries of one setting failed; one message per entry."""

    def __init__(self, reasons: list[str]) -> None:
        super().__init__("; ".join(reasons))
        self.reasons = reasons


def entry_errors(exc: ValueError) -> list[str]:
    return exc.reasons if isinstance(exc, _Entries) else [str(exc)]


def _each(items: list[tuple[str, Any]], parse: Callable[[str, Any], Any]) -> list[Any]:
    """Parse every entry, collecting one error per bad entry instead of stopping at one."""
    out, reasons = [], []
    for name, entry in items:
        try:
            out.append(parse(name, entry))
        except ValueError as exc:
            reasons.append(str(exc))
    if reasons:
        raise _Entries(reasons)
    return out


def _unknown(entry: Mapping[Any, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(str(k) for k in entry if k not in allowed)
    if unknown:
        raise ValueError(f"{where}.{describe(unknown[0])[1:-1]}: unknown key "
                         f"(use {', '.join(sorted(allowed))})")


def _password(entry: Mapping[Any, Any], where: str, required: bool) -> str:
    if "password" in entry and "password_file" in entry:
        raise ValueError(f"{where}: give password or password_file, not both")
    if "password_file" in entry:
        try:
            return read_secret(entry["password_file"])
        except ValueError as exc:
            raise ValueError(f"{where}.password_file: {exc}") from None
    if "password" not in entry:
        if required:
            raise ValueError(f"{where}: give password or password_file")
        return ""
    return _secret_in(entry["password"], f"{where}.password")


def _secret_in(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{where}: must be a string (value not shown: it is a secret)")
    return value


def registries(value: Any) -> tuple[tuple[str, Credentials], ...]:
    if not isinstance(value, Mapping):
        raise ValueError("must map registry hosts to {username, password or password_file}")

    def one(host: Any, entry: Any) -> tuple[str, Credentials]:
        if not isinstance(host, str) or not host or "/" in host or "@" in host or any(
                c.isspace() for c in host):
            raise ValueError(f"{describe(host)} is not a registry host (e.g. ghcr.io or "
                             "host:5000)")
        if not isinstance(entry, Mapping):
            raise ValueError(f"{host}: must be a mapping with username and password")
        _unknown(entry, {"username", "password", "password_file"}, host)
        user = entry.get("username")
        if not isinstance(user, str) or not user:
            raise ValueError(f"{host}.username: required, a string")
        return host, Credentials(user, _password(entry, host, required=True))

    return tuple(_each(list(value.items()), one))


def show_registries(value: tuple[tuple[str, Credentials], ...]) -> str:
    return ", ".join(f"{host} (user {auth.username}, password {MASK})" for host, auth in value)


def label_map(value: Any) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) and v for k, v in value.items()):
        raise ValueError("must map registry hosts to the registry label to use")
    return tuple(sorted(value.items()))


@dataclass(frozen=True)
class HarborInstance:
    """One Harbor to read per-repository pull counts from."""

    url: str
    username: str
    password: str = field(repr=False)
    projects: tuple[str, ...] = ()

    def __repr__(self) -> str:
        return (f"HarborInstance(url={redact_url(self.url)!r}, username={self.username!r}, "
                f"password={MASK})")


def harbor_instances(value: Any) -> tuple[HarborInstance, ...]:
    if not isinstance(value, list):
        raise ValueError("must be a list of {url, username, password or password_file, "
                         "projects}")

    def one(where: str, entry: Any) -> HarborInstance:
        if not isinstance(entry, Mapping):
            raise ValueError(f"{where}: must be a mapping")
        _unknown(entry, {"url", "username", "password", "password_file", "projects"}, where)
        try:
            address = url(entry.get("url"))
        except ValueError as exc:
            raise ValueError(f"{where}.url: {exc}") from None
        projects = entry.get("projects")
        if not isinstance(projects, list) or not projects or not all(
                isinstance(p, str) and p and "/" not in p for p in projects):
            raise ValueError(f"{where}.projects: a list of project names is required")
        user = entry.get("username", "")
        if not isinstance(user, str):
            raise ValueError(f"{where}.username: must be a string")
        return HarborInstance(address, user, _password(entry, where, required=False),
                              tuple(projects))

    return tuple(_each([(f"[{i}]", e) for i, e in enumerate(value)], one))


def show_harbor(value: tuple[HarborInstance, ...]) -> str:
    return ", ".join(f"{h.url} (projects {', '.join(h.projects)}"
                     f"{', user ' + h.username if h.username else ''})" for h in value)


PINS = ("none", "major", "minor")


@dataclass(frozen=True)
class VersionRule:
    """Which newer tags count as newer versions of the tags whose reference ``image`` matches.

    Container labels ``docker-hygiene.versions.<key>`` override the keys for that container.
    """

    image: str = ""  # regular expression on the short reference, e.g. ^nginx:
    # none | major | minor: stay on the same major or major.minor; "" (not set): the
    # versions.pin setting's, filled in by decisions.versions.rule_for
    pin: str = ""
    include: str = ""  # candidate tags must match this regular expression
    exclude: str = ""  # and must not match this one
    prereleases: bool = False

    def merged(self, labels: Mapping[str, str]) -> VersionRule:
        """This rule with a container's labels applied; a bad label value is ignored."""
        values: dict[str, Any] = {}
        for key, text in labels.items():
            try:
                values[key] = RULE_KEYS[key](text)
            except (KeyError, ValueError):
                continue
        values.pop("image", None)
        return VersionRule(**{**self.__dict__, **values})


RULE_KEYS: dict[str, Callable[[Any], Any]] = {
    "image": regex, "pin": choice(*PINS), "include": regex, "exclude": regex,
    "prereleases": boolean,
}


def version_rules(value: Any) -> tuple[VersionRule, ...]:
    if not isinstance(value, list):
        raise ValueError("must be a list of {image, pin, include, exclude, prereleases}")

    def one(where: str, entry: Any) -> VersionRule:
        if not isinstance(entry, Mapping):
            raise ValueError(f"{where}: must be a mapping")
        _unknown(entry, set(RULE_KEYS), where)
        values = {}
        for key, item in entry.items():
            try:
                values[key] = RULE_KEYS[key](item)
            except ValueError as exc:
                raise ValueError(f"{where}.{key}: {exc}") from None
        if "image" not in values:
            raise ValueError(f"{where}.image: required (a regular expression)")
        return VersionRule(**values)

    return tuple(_each([(f"[{i}]", e) for i, e in enumerate(value)], one))


def show_rules(value: tuple[VersionRule, ...]) -> str:
    return "; ".join(", ".join(f"{k}={v}" for k, v in r.__dict__.items()
                               if v != getattr(VersionRule, k, None) or k == "image")
                     for r in value)
