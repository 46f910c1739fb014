"""Configuration: one table of settings feeds flags, YAML keys, environment variables and docs.

Precedence, highest first: command-line flag, environment variable, config file, default.
Every setting has the same dotted name everywhere: the flag ``--web.listen-address``, the YAML
key ``web: {listen_address: ...}`` and the variable ``DOCKER_HYGIENE_WEB_LISTEN_ADDRESS``.

The table is ``Config`` itself: each field declares its setting (key, parser, default, help)
once, and ``SETTINGS`` is read from the fields. Fields are grouped by section (the key's first
part; ``SECTIONS``), so per-section objects can later be cut along those lines. An attribute is
its key with dots as underscores, except secrets read from files, which are named for what they
hold (``hub_password`` comes from ``hub.password_file``).

Every source is checked in full, even values a higher-precedence source overrides, and every
error is collected (``load``), so ``check-config`` and start-up give the same verdict.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from exporter import values as v
from exporter import yamlfile
from exporter.registry.credentials import Credentials
from exporter.values import (  # noqa: F401 (the public names of configuration values)
    PINS,
    HarborInstance,
    VersionRule,
    format_duration,
    parse_duration,
    redact_url,
)

ENV_PREFIX = "DOCKER_HYGIENE_"
DEFAULT_PORT = 10221
DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"


def _one_line(text: str, limit: int = 300) -> str:
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text if len(text) <= limit else text[:limit - 3] + "..."


class ConfigError(ValueError):
    """A bad setting; the message names the key and says why, on one line.

    ``origin`` says where the value came from: the file's path, ``$VARIABLE`` or ``--flag``.
    """

    def __init__(self, key: str, reason: str, origin: str = "") -> None:
        key, reason = _one_line(key, 100), _one_line(reason)
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason
        self.origin = origin


@dataclass(frozen=True)
class Setting:
    """One setting: its dotted key, parser, default and help text, and the attribute of
    ``Config`` that holds its value."""

    key: str
    parse: Callable[[Any], Any]
    default: Any  # None: computed elsewhere, and the help text says how
    help: str
    metavar: str = "VALUE"
    show: Callable[[Any], str] = str
    yaml_only: bool = False
    secret: bool = False  # never a flag (it would show in ps); masked wherever it is shown
    attr: str = ""
    alternative: bool = False  # another way to give the same attribute (e.g. a *_file key)

    @property
    def flag(self) -> str:
        return "--" + self.key.replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.key.replace(".", "_").replace("-", "_").upper()

    @property
    def path(self) -> tuple[str, ...]:
        return tuple(self.key.split("."))

    @property
    def section(self) -> str:
        return self.path[0]


def _setting(key: str, parse: Callable[[Any], Any], default: Any, help: str,
             metavar: str = "VALUE", show: Callable[[Any], str] = str, *,
             yaml_only: bool = False, secret: bool = False,
             alternative: Setting | None = None,
             factory: Callable[[], Any] | None = None) -> Any:
    """A field of Config declaring its setting; ``alternative`` is a second key filling the
    same attribute; ``factory`` computes the default (the setting's default is then None)."""
    settings = (Setting(key, parse, default, help, metavar, show, yaml_only, secret),)
    if alternative is not None:
        settings += (replace(alternative, alternative=True),)
    meta = {"settings": settings}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta, repr=show is not v.mask)


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


_DURATION = ("DURATION", format_duration)


@dataclass(frozen=True)
class Config:
    """The settings in force, after flags, environment and file were merged and checked."""

    # web
    web_listen_address: str = _setting(
        "web.listen_address", v.listen_address, f":{DEFAULT_PORT}",
        "Address to listen on for the web interface and telemetry.", "HOST:PORT")
    web_telemetry_path: str = _setting(
        "web.telemetry_path", v.url_path, "/metrics", "Path under which to expose metrics.",
        "PATH")
    web_config_file: str = _setting(
        "web.config.file", v.web_config_file, "",
        "Exporter-toolkit web config (TLS, basic auth, headers), re-read when it changes.",
        "FILE")
    # docker
    docker_host: str = _setting(
        "docker.host", v.docker_host, None,
        "Docker Engine or Podman endpoint (default: $DOCKER_HOST, else the first socket "
        "that exists of /var/run/docker.sock, /run/podman/podman.sock and "
        "$XDG_RUNTIME_DIR/podman/podman.sock). TLS follows DOCKER_TLS_VERIFY and "
        "DOCKER_CERT_PATH.", "URL",
        factory=_default_docker_host)
    docker_timeout: float = _setting(
        "docker.timeout", v.duration(), 30.0,
        "Timeout of one Engine API call (except /system/df).", *_DURATION)
    docker_config: str | None = _setting(
        "docker.config", v.optional_string, None,
        "Docker client config.json whose auths, credsStore and credHelpers give registry "
        "credentials (default: $DOCKER_CONFIG/config.json, else ~/.docker/config.json).",
        "FILE")
    # cri
    cri_endpoint: str = _setting(
        "cri.endpoint", v.cri_endpoint, "",
        "A Kubernetes node's CRI socket, e.g. unix:///run/containerd/containerd.sock: read "
        "images, pods' containers and the image filesystem through CRI instead of Docker "
        "or Podman (containerd only: pulls come from its event stream on the same socket).",
        "URL")
    cri_namespace: str = _setting(
        "cri.namespace", v.string, "k8s.io",
        "The containerd namespace whose image pulls are counted (the kubelet's).", "NAME")
    # collector
    collector_engine_interval: float = _setting(
        "collector.engine.interval", v.duration(), 15.0,
        "How often images and containers are read from the engine.", *_DURATION)
    collector_disk_interval: float = _setting(
        "collector.disk.interval", v.duration(), 300.0,
        "How often /system/df is called; it walks every layer and volume, so keep it slow.",
        *_DURATION)
    collector_disk_timeout: float = _setting(
        "collector.disk.timeout", v.duration(), 600.0, "Timeout of one /system/df call.",
        *_DURATION)
    collector_on_scrape: bool = _setting(
        "collector.on_scrape", v.boolean, False,
        "Read images, containers and /system/df during each scrape instead of in the "
        "background: the collect-on-scrape baseline of the benchmark, not for production "
        "(scrapes then wait on Docker).", "BOOL")
    # upstream
    upstream_mode: str = _setting(
        "upstream.mode", v.choice("local", "off", "central"), "local",
        "local: check this host's tags against their registries; off: no registry "
        "traffic; central: the fleet's checker (see upstream.prometheus_url).", "MODE")
    upstream_prometheus_url: str = _setting(
        "upstream.prometheus_url", v.optional_url, "",
        "Central mode: Prometheus to ask for every host's tags "
        "(docker_image_info with a registry digest).", "URL")
    upstream_references: tuple[str, ...] = _setting(
        "upstream.references", v.string_list, (),
        "Central mode: tags to check besides those Prometheus knows.", "REF,...", v.show_list)
    upstream_shard: str = _setting(
        "upstream.shard", v.shard, "0/1",
        "Central mode: check only the tags whose hash falls in shard i of n (i/n), to "
        "split a large fleet over several checkers.", "I/N")
    upstream_interval: float = _setting(
        "upstream.interval", v.duration(low=1.0), 6 * 3600.0,
        "How often each tag is checked against its registry (jittered; the first check "
        "runs right after start-up and whenever a tag's local image changes; at least 1s).",
        *_DURATION)
    upstream_timeout: float = _setting(
        "upstream.timeout", v.duration(), 10.0, "Timeout of one registry request.", *_DURATION)
    upstream_concurrency: int = _setting(
        "upstream.concurrency", v.whole(1, 1024), 32,
        "Registry requests in flight at most, over all registries (1 to 1024).", "N")
    upstream_registry_concurrency: int = _setting(
        "upstream.registry_concurrency", v.whole(1, 1024), 16,
        "Registry requests in flight at most, per registry (1 to 1024).", "N")
    upstream_include: tuple[str, ...] = _setting(
        "upstream.include", v.regex_list, (),
        "Only check image references (short form, e.g. nginx:1.25) matching one of these "
        "regular expressions; comma-separated on the command line. Empty: all.", "REGEX,...",
        v.show_list)
    upstream_exclude: tuple[str, ...] = _setting(
        "upstream.exclude", v.regex_list, (),
        "Never check image references matching one of these regular expressions.",
        "REGEX,...", v.show_list)
    upstream_insecure_registries: tuple[str, ...] = _setting(
        "upstream.insecure_registries", v.string_list, (),
        "Registries to reach over plain HTTP besides those the engine treats as insecure "
        "(loopback and the daemon's insecure-registries).", "HOST,...", v.show_list)
    upstream_platform: str = _setting(
        "upstream.platform", v.platform, "",
        "Platform whose manifest decides drift in multi-arch images (default: the "
        "engine's, e.g. linux/amd64).", "OS/ARCH")
    # versions
    versions_enabled: bool = _setting(
        "versions.enabled", v.boolean, True,
        "Look for newer versions of local tags that look like versions (1.25, v1.2.3, "
        "1.25.3-alpine; upstream.mode local).", "BOOL")
    versions_interval: float = _setting(
        "versions.interval", v.duration(), 12 * 3600.0,
        "How long a repository's tag list, and what its candidate tags hold, is reused "
        "before it is read again.", *_DURATION)
    versions_max_tags: int = _setting(
        "versions.max_tags", v.whole(1, 1_000_000), 10000,
        "Read at most this many tags of one repository (1 to 1000000; registries list them "
        "in lexical order; Docker Hub's API newest first).", "N")
    versions_pin: str = _setting(
        "versions.pin", v.choice(*PINS), "major",
        "Which newer versions count where no rule or label sets a pin: major (same first "
        "number), minor (same first two), none (any).", "PIN")
    versions_rules: tuple[VersionRule, ...] = _setting(
        "versions.rules", v.version_rules, (),
        "Per-image rules: {image (regex), pin (none, major, minor; default versions.pin), "
        "include, exclude (regexes on candidate tags), prereleases}; the first match "
        "applies.",
        show=v.show_rules, yaml_only=True)
    # state
    state_path: str | None = _setting(
        "state.path", v.optional_string, None,
        "SQLite file keeping drift-since times, last decided upstream states, tags' first "
        "sight, registry documents and tag lists across restarts (default: "
        "$STATE_DIRECTORY/state.db, else ~/.local/state/docker-hygiene-exporter/state.db).",
        "FILE")
    # registries
    registries: tuple[tuple[str, Credentials], ...] = _setting(
        "registries", v.registries, (),
        "Registry credentials by host: {username, password or password_file}.",
        show=v.show_registries, yaml_only=True)
    # events
    events_enabled: bool = _setting(
        "events.enabled", v.boolean, True,
        "Count image pulls on this host from the engine's event stream.", "BOOL")
    # hub
    hub_enabled: bool = _setting(
        "hub.enabled", v.boolean, True,
        "Read pull and star counts of Docker Hub repositories from the Hub API.", "BOOL")
    hub_url: str = _setting("hub.url", v.url, "https://hub.docker.com",
                            "Docker Hub API base URL.", "URL")
    hub_interval: float = _setting(
        "hub.interval", v.duration(), 3600.0, "How often the Hub API is read.", *_DURATION)
    hub_repositories: tuple[str, ...] = _setting(
        "hub.repositories", v.string_list, (),
        "Hub repositories to read besides those local images were pulled from "
        "(namespace/name; official images are library/name).", "REPO,...", v.show_list)
    hub_local_images: bool = _setting(
        "hub.local_images", v.boolean, True,
        "Also read the Docker Hub repositories local images were pulled from (a docker.io "
        "RepoDigest); local builds are never named to Docker Hub.", "BOOL")
    hub_username: str = _setting(
        "hub.username", v.optional_string, "",
        "Docker Hub user for the Hub API (optional; raises its rate limit).", "USER")
    hub_password: str = _setting(
        "hub.password_file", v.secret_file, "",
        "File holding the Hub password or personal access token.", "FILE", v.mask)
    # webhook
    webhook_distribution_path: str = _setting(
        "webhook.distribution.path", v.url_path, "/webhooks/distribution",
        "Path that accepts CNCF Distribution registry notifications.", "PATH")
    webhook_distribution_secret: str = _setting(
        "webhook.distribution.secret", v.secret_string, "",
        "Authorization header value the registry must send (e.g. \"Bearer s3cret\"); the "
        "webhook is off until a secret is set. Not a flag: set it in the file or env.",
        "VALUE", v.mask, secret=True,
        alternative=Setting("webhook.distribution.secret_file", v.secret_file, "",
                            "File holding the webhook secret instead.", "FILE", v.mask))
    webhook_distribution_registries: tuple[tuple[str, str], ...] = _setting(
        "webhook.distribution.registries", v.label_map, (),
        "Registry label per request host, instead of the host the clients used.",
        show=lambda m: ", ".join(f"{k}={n}" for k, n in m), yaml_only=True)
    # harbor
    harbor_interval: float = _setting(
        "harbor.interval", v.duration(), 3600.0, "How often Harbor repositories are read.",
        *_DURATION)
    harbor_instances: tuple[HarborInstance, ...] = _setting(
        "harbor.instances", v.harbor_instances, (),
        "Harbor instances: {url, username, password or password_file, projects}.",
        show=v.show_harbor, yaml_only=True)
    # log
    log_level: str = _setting(
        "log.level", v.choice("debug", "info", "warn", "error"), "info",
        "Only log messages with the given severity or above.", "LEVEL")
    log_format: str = _setting(
        "log.format", v.choice("logfmt", "json"), "logfmt", "Output format of log messages.",
        "FORMAT")

    config_file: str | None = None

    def __repr__(self) -> str:
        """Secrets left out and URL user-info masked: a Config may end up in a log."""
        shown = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in fields(self) if f.repr)
        return redact_url(f"Config({shown})")

    def listen(self) -> tuple[str, int]:
        host, _, port = self.web_listen_address.rpartition(":")
        return host.strip("[]") or "", int(port)

    def shown(self) -> dict[str, str]:
        """The settings in force as display strings, for the /config page and logs: secrets
        masked, and the user-info of every URL too."""
        out = {}
        for s in SETTINGS:
            if s.alternative:
                continue
            value = getattr(self, s.attr)
            out[s.key] = redact_url(s.show(value)) if value is not None else ""
        return out


SETTINGS: tuple[Setting, ...] = tuple(
    replace(s, attr=f.name) for f in fields(Config) for s in f.metadata.get("settings", ()))
SETTINGS_BY_KEY: dict[str, Setting] = {s.key: s for s in SETTINGS}
SECTIONS: dict[str, tuple[Setting, ...]] = {
    section: tuple(s for s in SETTINGS if s.section == section)
    for section in dict.fromkeys(s.section for s in SETTINGS)}


def _suggest(key: str) -> str:
    match = difflib.get_close_matches(key, SETTINGS_BY_KEY, n=1, cutoff=0.7) if len(
        key) < 100 else []
    return f" (did you mean {match[0]}?)" if match else ""


def _key_text(key: Any) -> str:
    """A YAML key as an error names it: as YAML spells it, short, on one line."""
    if key is None or isinstance(key, bool):
        text = {None: "null", True: "true", False: "false"}[key]
    elif isinstance(key, int) and key.bit_length() >= 64:
        text = "a large number"
    else:
        text = str(key)
    return _one_line(text, 60)


def _flatten(doc: Mapping[Any, Any], prefix: str, out: dict[str, Any],
             errors: list[ConfigError], origin: str) -> None:
    for raw_key, value in doc.items():
        if not isinstance(raw_key, str):
            errors.append(ConfigError(prefix + _key_text(raw_key), "keys must be strings",
                                      origin))
            continue
        key = prefix + raw_key
        if key in SETTINGS_BY_KEY:
            if key in out:
                errors.append(ConfigError(key, "given twice", origin))
            out[key] = value
        elif any(k.startswith(key + ".") for k in SETTINGS_BY_KEY):
            if isinstance(value, Mapping):
                _flatten(value, key + ".", out, errors, origin)
            elif value is not None:  # an empty section is fine
                errors.append(ConfigError(key, f"must be a mapping of {key}.* settings, not "
                                               f"{v.describe(value)}", origin))
        else:
            errors.append(ConfigError(prefix + _key_text(raw_key), "unknown key"
                                      + _suggest(key), origin))


def flatten(doc: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Turn nested YAML into dotted keys, rejecting keys we do not know."""
    out: dict[str, Any] = {}
    errors: list[ConfigError] = []
    _flatten(doc, prefix, out, errors, "")
    if errors:
        raise errors[0]
    return out


def _read_file(path: str) -> tuple[dict[str, Any], list[ConfigError]]:
    try:
        doc = yamlfile.load(path)
    except yamlfile.YamlFileError as exc:
        return {}, [ConfigError("config.file", str(exc), path)]
    if doc is None:
        return {}, []
    if not isinstance(doc, Mapping):
        return {}, [ConfigError("config.file", f"{path} must hold a mapping of settings", path)]
    out: dict[str, Any] = {}
    errors: list[ConfigError] = []
    _flatten(doc, "", out, errors, path)
    return out, errors


def read_file(path: str) -> dict[str, Any]:
    """Read and flatten a YAML config file; raises ConfigError naming the first problem."""
    out, errors = _read_file(path)
    if errors:
        raise errors[0]
    return out


def read_env(environ: Mapping[str, str]) -> dict[str, Any]:
    return {s.key: environ[s.env] for s in SETTINGS
            if not s.yaml_only and environ.get(s.env) not in (None, "")}


def flag_settings() -> list[Setting]:
    return [s for s in SETTINGS if not s.yaml_only and not s.secret]


def load(
    flags: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    config_file: str | None = None,
) -> tuple[Config | None, list[ConfigError]]:
    """Check file, environment and flags in full; the Config, or None and every error."""
    environ = os.environ if environ is None else environ
    config_file = config_file or environ.get(ENV_PREFIX + "CONFIG_FILE") or None
    errors: list[ConfigError] = []
    layers: list[tuple[Mapping[str, Any], Callable[[Setting], str]]] = []
    if config_file:
        raw, file_errors = _read_file(config_file)
        errors += file_errors
        layers.append((raw, lambda s: str(config_file)))
    layers.append((read_env(environ), lambda s: "$" + s.env))
    flags = {k: x for k, x in (flags or {}).items() if x is not None}
    for key in flags:
        if key not in SETTINGS_BY_KEY or SETTINGS_BY_KEY[key] not in flag_settings():
            errors.append(ConfigError(key, "not a flag", "command line"))
    layers.append(({k: x for k, x in flags.items() if k in SETTINGS_BY_KEY}, lambda s: s.flag))
    chosen: dict[str, tuple[Any, str]] = {}  # key -> (value, origin); higher layers win
    for raw, origin in layers:
        for key, value in raw.items():
            s = SETTINGS_BY_KEY[key]
            try:
                chosen[key] = (s.parse(value), origin(s))
            except (ValueError, TypeError) as exc:
                errors += [ConfigError(key, reason, origin(s))
                           for reason in v.entry_errors(exc)]
    if "docker.host" not in chosen and environ.get("DOCKER_HOST"):
        try:
            chosen["docker.host"] = (v.docker_host(environ["DOCKER_HOST"]), "$DOCKER_HOST")
        except ValueError as exc:
            errors.append(ConfigError("docker.host", str(exc), "$DOCKER_HOST"))
    attrs: dict[str, Any] = {}
    given: dict[str, str] = {}  # attribute -> the key that gave it
    for key, (value, origin) in chosen.items():
        attr = SETTINGS_BY_KEY[key].attr
        if given.get(attr, key) != key and value and attrs[attr]:
            errors.append(ConfigError(key, f"give {given[attr]} or {key}, not both", origin))
        if value or attr not in attrs:
            attrs[attr], given[attr] = value, key
    attrs.setdefault("docker_host", _default_docker_host(environ))
    if attrs.get("upstream_mode") == "central" and not (
            attrs.get("upstream_prometheus_url") or attrs.get("upstream_references")):
        errors.append(ConfigError("upstream.prometheus_url", "central mode needs a Prometheus "
                                  "to ask or upstream.references", chosen["upstream.mode"][1]))
    if errors:
        return None, errors
    return Config(config_file=config_file, **attrs), []


def build(
    flags: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    config_file: str | None = None,
) -> Config:
    """Merge defaults < file < environment < flags, parse every value, and return a Config;
    raises the first ConfigError (``load`` gives them all)."""
    cfg, errors = load(flags, environ, config_file)
    if cfg is None:
        raise errors[0]
    return cfg
