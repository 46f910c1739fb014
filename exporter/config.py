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

from exporter.registry.credentials import Credentials

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
    if not sep or not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
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


def _whole(value: Any, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"{value!r} is not a whole number")
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a whole number") from None
    if not 0 < number <= high:
        raise ValueError(f"{value!r} must be between 1 and {high}")
    return number


def _positive_int(value: Any) -> int:
    return _whole(value, 1024)


def _string_list(value: Any) -> tuple[str, ...]:
    """A YAML list, or a comma-separated string from a flag or the environment."""
    if isinstance(value, str):
        items = [v.strip() for v in value.split(",") if v.strip()]
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        items = value
    else:
        raise ValueError(f"{value!r} is not a list of strings")
    return tuple(items)


def _regex_list(value: Any) -> tuple[str, ...]:
    items = _string_list(value)
    for item in items:
        try:
            re.compile(item)
        except re.error as exc:
            raise ValueError(f"{item!r} is not a regular expression: {exc}") from None
    return items


def _optional_string(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a string")
    return value


def _platform(value: Any) -> str:
    value = _optional_string(value)
    if value and not re.fullmatch(r"[a-z0-9]+/[a-z0-9_]+(/[a-z0-9]+)?", value):
        raise ValueError(f"{value!r} is not a platform: use os/arch or os/arch/variant")
    return value


def _registries(value: Any) -> tuple[tuple[str, Credentials], ...]:
    if not isinstance(value, Mapping):
        raise ValueError("must map registry hosts to {username, password or password_file}")
    out = []
    for host, entry in value.items():
        if not isinstance(host, str) or not host or "/" in host:
            raise ValueError(f"{host!r} is not a registry host (e.g. ghcr.io or host:5000)")
        if not isinstance(entry, Mapping):
            raise ValueError(f"{host}: must be a mapping with username and password")
        unknown = set(entry) - {"username", "password", "password_file"}
        if unknown:
            raise ValueError(f"{host}.{sorted(map(str, unknown))[0]}: unknown key")
        user = entry.get("username")
        if not isinstance(user, str) or not user:
            raise ValueError(f"{host}.username: required")
        if ("password" in entry) == ("password_file" in entry):
            raise ValueError(f"{host}: give exactly one of password and password_file")
        if "password_file" in entry:
            path = entry["password_file"]
            try:
                with open(str(path), encoding="utf-8") as fh:
                    password = fh.read().strip()
            except OSError as exc:
                raise ValueError(f"{host}.password_file: cannot read {path}: "
                                 f"{exc.strerror}") from None
        else:
            password = entry["password"]
            if not isinstance(password, str):
                raise ValueError(f"{host}.password: must be a string")
        out.append((host, Credentials(user, password)))
    return tuple(out)


def _show_registries(value: tuple[tuple[str, Credentials], ...]) -> str:
    return ", ".join(f"{host} (user {auth.username}, password <masked>)" for host, auth in value)


def _show_list(value: tuple[str, ...]) -> str:
    return ", ".join(value)


def _web_config_file(value: Any) -> str:
    """Loaded once here so a bad file is a start-up error naming the key inside it."""
    from exporter.web.webconfig import WebConfigError, load

    path = _string(value)
    try:
        load(path)
    except WebConfigError as exc:
        raise ValueError(str(exc)) from None
    return path


def _optional_url(value: Any) -> str:
    return _url(value) if value else ""


def _shard(value: Any) -> str:
    m = re.fullmatch(r"(\d+)/(\d+)", str(value))
    if not m or int(m.group(2)) < 1 or int(m.group(1)) >= int(m.group(2)):
        raise ValueError(f"{value!r} is not a shard: use i/n with 0 <= i < n, e.g. 0/3")
    return str(value)


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.lower() in ("true", "1", "yes")
    raise ValueError(f"{value!r} is not true or false")


def _url(value: Any) -> str:
    value = _string(value)
    if not re.match(r"^https?://[^/\s]+", value):
        raise ValueError(f"{value!r} is not an http(s) URL")
    return value.rstrip("/")


def _read_secret(path: Any, key: str) -> str:
    try:
        with open(str(path), encoding="utf-8") as fh:
            return fh.read().strip()
    except OSError as exc:
        raise ValueError(f"{key}: cannot read {path}: {exc.strerror}") from None


def _secret_file(value: Any) -> str:
    """A file holding a secret: read at start-up, so a missing file is a start-up error."""
    return _read_secret(_string(value), "file")


def _mask(value: Any) -> str:
    return "<masked>" if value else ""


def _label_map(value: Any) -> tuple[tuple[str, str], ...]:
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
        return f"HarborInstance(url={self.url!r}, username={self.username!r}, password=<masked>)"


def _harbor_instances(value: Any) -> tuple[HarborInstance, ...]:
    if not isinstance(value, list):
        raise ValueError("must be a list of {url, username, password or password_file, "
                         "projects}")
    out = []
    for i, entry in enumerate(value):
        if not isinstance(entry, Mapping):
            raise ValueError(f"[{i}]: must be a mapping")
        unknown = set(entry) - {"url", "username", "password", "password_file", "projects"}
        if unknown:
            raise ValueError(f"[{i}].{sorted(map(str, unknown))[0]}: unknown key")
        try:
            url = _url(entry.get("url"))
        except ValueError as exc:
            raise ValueError(f"[{i}].url: {exc}") from None
        projects = entry.get("projects")
        if not isinstance(projects, list) or not projects or not all(
                isinstance(p, str) and p for p in projects):
            raise ValueError(f"[{i}].projects: a list of project names is required")
        user = entry.get("username", "")
        if "password_file" in entry:
            password = _read_secret(entry["password_file"], f"[{i}].password_file")
        else:
            password = entry.get("password", "")
        if not isinstance(user, str) or not isinstance(password, str):
            raise ValueError(f"[{i}]: username and password must be strings")
        out.append(HarborInstance(url, user, password, tuple(projects)))
    return tuple(out)


def _show_harbor(value: tuple[HarborInstance, ...]) -> str:
    return ", ".join(f"{h.url} (projects {', '.join(h.projects)}"
                     f"{', user ' + h.username if h.username else ''})" for h in value)


PINS = ("none", "major", "minor")


@dataclass(frozen=True)
class VersionRule:
    """Which newer tags count as newer versions of the tags whose reference ``image`` matches.

    Container labels ``docker-hygiene.versions.<key>`` override the keys for that container.
    """

    image: str = ""  # regular expression on the short reference, e.g. ^nginx:
    pin: str = "none"  # none | major | minor: stay on the same major or major.minor
    include: str = ""  # candidate tags must match this regular expression
    exclude: str = ""  # and must not match this one
    prereleases: bool = False

    def merged(self, labels: Mapping[str, str]) -> VersionRule:
        """This rule with a container's labels applied; a bad label value is ignored."""
        values: dict[str, Any] = {}
        for key, text in labels.items():
            try:
                values[key] = _RULE_KEYS[key](text)
            except (KeyError, ValueError):
                continue
        values.pop("image", None)
        return VersionRule(**{**self.__dict__, **values})


def _pin(value: Any) -> str:
    return _choice(*PINS)(value)


def _optional_regex(value: Any) -> str:
    value = _optional_string(value)
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"{value!r} is not a regular expression: {exc}") from None
    return value


_RULE_KEYS: dict[str, Callable[[Any], Any]] = {
    "image": _optional_regex, "pin": _pin, "include": _optional_regex,
    "exclude": _optional_regex, "prereleases": lambda v: _bool(v),
}


def _version_rules(value: Any) -> tuple[VersionRule, ...]:
    if not isinstance(value, list):
        raise ValueError("must be a list of {image, pin, include, exclude, prereleases}")
    out = []
    for i, entry in enumerate(value):
        if not isinstance(entry, Mapping):
            raise ValueError(f"[{i}]: must be a mapping")
        values = {}
        for key, item in entry.items():
            if key not in _RULE_KEYS:
                raise ValueError(f"[{i}].{key}: unknown key (use {', '.join(_RULE_KEYS)})")
            try:
                values[key] = _RULE_KEYS[key](item)
            except ValueError as exc:
                raise ValueError(f"[{i}].{key}: {exc}") from None
        if "image" not in values:
            raise ValueError(f"[{i}].image: required (a regular expression)")
        out.append(VersionRule(**values))
    return tuple(out)


def _show_rules(value: tuple[VersionRule, ...]) -> str:
    return "; ".join(", ".join(f"{k}={v}" for k, v in r.__dict__.items()
                               if v != getattr(VersionRule, k, None) or k == "image")
                     for r in value)


def _tag_count(value: Any) -> int:
    return _whole(value, 1_000_000)


@dataclass(frozen=True)
class Setting:
    """One setting: its dotted key, parser, default and help text."""

    key: str
    parse: Callable[[Any], Any]
    default: Any
    help: str
    metavar: str = "VALUE"
    show: Callable[[Any], str] = str
    yaml_only: bool = False
    secret: bool = False  # never a flag (it would show in ps); masked wherever it is shown

    @property
    def flag(self) -> str:
        return "--" + self.key.replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.key.replace(".", "_").replace("-", "_").upper()

    @property
    def path(self) -> tuple[str, ...]:
        return tuple(self.key.split("."))


# With no $DOCKER_HOST, the first of these that exists: Docker's socket, rootful Podman's,
# then the user's own (rootless) Podman's; {runtime} is $XDG_RUNTIME_DIR.
ENGINE_SOCKETS = ("/var/run/docker.sock", "/run/podman/podman.sock",
                  "{runtime}/podman/podman.sock")


def _default_docker_host(environ: Mapping[str, str] | None = None) -> str:
    environ = os.environ if environ is None else environ
    if environ.get("DOCKER_HOST"):
        return environ["DOCKER_HOST"]
    runtime = environ.get("XDG_RUNTIME_DIR") or f"/run/user/{os.getuid()}"
    for path in ENGINE_SOCKETS:
        if os.path.exists(path.format(runtime=runtime)):
            return "unix://" + path.format(runtime=runtime)
    return DEFAULT_DOCKER_HOST


SETTINGS: tuple[Setting, ...] = (
    Setting("web.listen_address", _parse_listen_address, f":{DEFAULT_PORT}",
            "Address to listen on for the web interface and telemetry.", "HOST:PORT"),
    Setting("web.telemetry_path", _parse_path, "/metrics",
            "Path under which to expose metrics.", "PATH"),
    Setting("web.config.file", _web_config_file, "",
            "Exporter-toolkit web config (TLS, basic auth, headers), re-read when it changes.",
            "FILE"),
    Setting("docker.host", _docker_host, None,
            "Docker Engine or Podman endpoint (default: $DOCKER_HOST, else the first socket "
            "that exists of /var/run/docker.sock, /run/podman/podman.sock and "
            "$XDG_RUNTIME_DIR/podman/podman.sock). TLS follows DOCKER_TLS_VERIFY and "
            "DOCKER_CERT_PATH.", "URL"),
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
    Setting("collector.on_scrape", _bool, False,
            "Read images, containers and /system/df during each scrape instead of in the "
            "background: the collect-on-scrape baseline of the benchmark, not for production "
            "(scrapes then wait on Docker).", "BOOL"),
    Setting("docker.config", _optional_string, None,
            "Docker client config.json whose auths, credsStore and credHelpers give registry "
            "credentials (default: $DOCKER_CONFIG/config.json, else ~/.docker/config.json).",
            "FILE"),
    Setting("upstream.mode", _choice("local", "off", "central"), "local",
            "local: check this host's tags against their registries; off: no registry "
            "traffic; central: the fleet's checker (see upstream.prometheus_url).", "MODE"),
    Setting("upstream.prometheus_url", _optional_url, "",
            "Central mode: Prometheus to ask for every host's tags "
            "(docker_image_info with a registry digest).", "URL"),
    Setting("upstream.references", _string_list, (),
            "Central mode: tags to check besides those Prometheus knows.", "REF,...",
            _show_list),
    Setting("upstream.shard", _shard, "0/1",
            "Central mode: check only the tags whose hash falls in shard i of n (i/n), to "
            "split a large fleet over several checkers.", "I/N"),
    Setting("upstream.interval", parse_duration, 6 * 3600.0,
            "How often each tag is checked against its registry (jittered; the first check "
            "runs right after start-up and whenever a tag's local image changes).",
            "DURATION", format_duration),
    Setting("upstream.timeout", parse_duration, 10.0,
            "Timeout of one registry request.", "DURATION", format_duration),
    Setting("upstream.concurrency", _positive_int, 32,
            "Registry requests in flight at most, over all registries.", "N"),
    Setting("upstream.registry_concurrency", _positive_int, 16,
            "Registry requests in flight at most, per registry.", "N"),
    Setting("upstream.include", _regex_list, (),
            "Only check image references (short form, e.g. nginx:1.25) matching one of these "
            "regular expressions; comma-separated on the command line. Empty: all.", "REGEX,...",
            _show_list),
    Setting("upstream.exclude", _regex_list, (),
            "Never check image references matching one of these regular expressions.",
            "REGEX,...", _show_list),
    Setting("upstream.insecure_registries", _string_list, (),
            "Registries to reach over plain HTTP besides those the engine treats as insecure "
            "(loopback and the daemon's insecure-registries).", "HOST,...", _show_list),
    Setting("upstream.platform", _platform, "",
            "Platform whose manifest decides drift in multi-arch images (default: the "
            "engine's, e.g. linux/amd64).", "OS/ARCH"),
    Setting("versions.enabled", _bool, True,
            "Look for newer versions of local tags that look like versions (1.25, v1.2.3, "
            "1.25.3-alpine; upstream.mode local).", "BOOL"),
    Setting("versions.interval", parse_duration, 12 * 3600.0,
            "How long a repository's tag list, and what its candidate tags hold, is reused "
            "before it is read again.", "DURATION", format_duration),
    Setting("versions.max_tags", _tag_count, 10000,
            "Read at most this many tags of one repository (registries list them in lexical "
            "order; Docker Hub's API newest first).", "N"),
    Setting("versions.rules", _version_rules, (),
            "Per-image rules: {image (regex), pin (none, major, minor), include, exclude "
            "(regexes on candidate tags), prereleases}; the first match applies.",
            show=_show_rules, yaml_only=True),
    Setting("state.path", _optional_string, None,
            "SQLite file keeping drift-since times, registry documents and tag lists across "
            "restarts "
            "(default: $STATE_DIRECTORY/state.db, else "
            "~/.local/state/docker-hygiene-exporter/state.db).", "FILE"),
    Setting("registries", _registries, (),
            "Registry credentials by host: {username, password or password_file}.",
            show=_show_registries, yaml_only=True),
    Setting("events.enabled", _bool, True,
            "Count image pulls on this host from the engine's event stream.", "BOOL"),
    Setting("hub.enabled", _bool, True,
            "Read pull and star counts of Docker Hub repositories from the Hub API.", "BOOL"),
    Setting("hub.url", _url, "https://hub.docker.com", "Docker Hub API base URL.", "URL"),
    Setting("hub.interval", parse_duration, 3600.0,
            "How often the Hub API is read.", "DURATION", format_duration),
    Setting("hub.repositories", _string_list, (),
            "Hub repositories to read besides those local images come from "
            "(namespace/name; official images are library/name).", "REPO,...", _show_list),
    Setting("hub.local_images", _bool, True,
            "Also read every Docker Hub repository that local images come from.", "BOOL"),
    Setting("hub.username", _optional_string, "",
            "Docker Hub user for the Hub API (optional; raises its rate limit).", "USER"),
    Setting("hub.password_file", _secret_file, "",
            "File holding the Hub password or personal access token.", "FILE", _mask),
    Setting("webhook.distribution.path", _parse_path, "/webhooks/distribution",
            "Path that accepts CNCF Distribution registry notifications.", "PATH"),
    Setting("webhook.distribution.secret", _optional_string, "",
            "Authorization header value the registry must send (e.g. \"Bearer s3cret\"); the "
            "webhook is off until a secret is set. Not a flag: set it in the file or env.",
            "VALUE", _mask, secret=True),
    Setting("webhook.distribution.secret_file", _secret_file, "",
            "File holding the webhook secret instead.", "FILE", _mask),
    Setting("webhook.distribution.registries", _label_map, (),
            "Registry label per request host, instead of the host the clients used.",
            show=lambda v: ", ".join(f"{k}={n}" for k, n in v), yaml_only=True),
    Setting("harbor.interval", parse_duration, 3600.0,
            "How often Harbor repositories are read.", "DURATION", format_duration),
    Setting("harbor.instances", _harbor_instances, (),
            "Harbor instances: {url, username, password or password_file, projects}.",
            show=_show_harbor, yaml_only=True),
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
    web_config_file: str = ""
    docker_host: str = field(default_factory=_default_docker_host)
    docker_timeout: float = 30.0
    collector_engine_interval: float = 15.0
    collector_disk_interval: float = 300.0
    collector_disk_timeout: float = 600.0
    collector_on_scrape: bool = False
    docker_config: str | None = None
    upstream_mode: str = "local"
    upstream_prometheus_url: str = ""
    upstream_references: tuple[str, ...] = ()
    upstream_shard: str = "0/1"
    upstream_interval: float = 6 * 3600.0
    upstream_timeout: float = 10.0
    upstream_concurrency: int = 32
    upstream_registry_concurrency: int = 16
    upstream_include: tuple[str, ...] = ()
    upstream_exclude: tuple[str, ...] = ()
    upstream_insecure_registries: tuple[str, ...] = ()
    upstream_platform: str = ""
    versions_enabled: bool = True
    versions_interval: float = 12 * 3600.0
    versions_max_tags: int = 10000
    versions_rules: tuple[VersionRule, ...] = ()
    state_path: str | None = None
    registries: tuple[tuple[str, Credentials], ...] = ()
    events_enabled: bool = True
    hub_enabled: bool = True
    hub_url: str = "https://hub.docker.com"
    hub_interval: float = 3600.0
    hub_repositories: tuple[str, ...] = ()
    hub_local_images: bool = True
    hub_username: str = ""
    hub_password_file: str = field(default="", repr=False)
    webhook_distribution_path: str = "/webhooks/distribution"
    webhook_distribution_secret: str = field(default="", repr=False)
    webhook_distribution_secret_file: str = field(default="", repr=False)
    webhook_distribution_registries: tuple[tuple[str, str], ...] = ()
    harbor_interval: float = 3600.0
    harbor_instances: tuple[HarborInstance, ...] = ()
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


def flatten(doc: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Turn nested YAML into dotted keys, rejecting keys we do not know."""
    out: dict[str, Any] = {}
    for raw_key, value in doc.items():
        if not isinstance(raw_key, str):
            raise ConfigError(f"{prefix}{raw_key!r}", "keys must be strings")
        key = prefix + raw_key
        if key in SETTINGS_BY_KEY:
            out[key] = value
        elif isinstance(value, Mapping) and any(k.startswith(key + ".") for k in SETTINGS_BY_KEY):
            out.update(flatten(value, key + "."))
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
    except UnicodeDecodeError:
        raise ConfigError("config.file", f"{path} is not UTF-8 text") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError("config.file", f"{path} is not valid YAML{where}") from None
    if doc is None:
        return {}
    if not isinstance(doc, Mapping):
        raise ConfigError("config.file", f"{path} must hold a mapping of settings")
    return flatten(doc)


def read_env(environ: Mapping[str, str]) -> dict[str, Any]:
    return {s.key: environ[s.env] for s in SETTINGS
            if not s.yaml_only and environ.get(s.env) not in (None, "")}


def flag_settings() -> list[Setting]:
    return [s for s in SETTINGS if not s.yaml_only and not s.secret]


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
        values["docker_host"] = _default_docker_host(environ)
    if "upstream_interval" in values and values["upstream_interval"] < 1:
        raise ConfigError("upstream.interval", "must be at least 1s")
    if values.get("upstream_mode") == "central" and not (
            values.get("upstream_prometheus_url") or values.get("upstream_references")):
        raise ConfigError("upstream.prometheus_url", "central mode needs a Prometheus to ask "
                          "or upstream.references")
    if values.get("webhook_distribution_secret") and values.get(
            "webhook_distribution_secret_file"):
        raise ConfigError("webhook.distribution.secret", "give secret or secret_file, not both")
    return Config(config_file=config_file, **values)
