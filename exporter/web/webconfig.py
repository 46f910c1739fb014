"""``--web.config.file``: TLS and basic auth in the format of the Prometheus exporter-toolkit.

The same file a Go exporter takes::

    tls_server_config:
      cert_file: server.crt
      key_file: server.key
      client_auth_type: RequireAndVerifyClientCert
      client_ca_file: clients-ca.crt
      min_version: TLS12
    http_server_config:
      headers:
        Strict-Transport-Security: max-age=31536000
    basic_auth_users:
      prometheus: $2b$12$...   # bcrypt hash

Like the Go implementation, the file is read again when it changes (checked on every
connection and request), so certificates and users rotate without a restart. A change that
does not load keeps the last good configuration in force and is logged once.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import logging
import os
import ssl
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import bcrypt

from exporter import yamlfile

log = logging.getLogger(__name__)

_VERSIONS = {"TLS10": ssl.TLSVersion.TLSv1, "TLS11": ssl.TLSVersion.TLSv1_1,
             "TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
_CLIENT_AUTH = {"NoClientCert": ssl.CERT_NONE, "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
                "RequireAndVerifyClientCert": ssl.CERT_REQUIRED}
_UNSUPPORTED_AUTH = ("RequestClientCert", "RequireAnyClientCert")
_TLS_KEYS = {"cert_file", "key_file", "client_auth_type", "client_ca_file", "min_version",
             "max_version"}
_TLS_UNSUPPORTED = {"cipher_suites", "curve_preferences", "prefer_server_cipher_suites",
                    "client_allowed_sans", "cert", "key"}
_FORBIDDEN_HEADERS = {"content-type", "content-length", "content-encoding", "connection",
                      "transfer-encoding", "www-authenticate", "authorization"}
_AUTH_CACHE = 1024


class WebConfigError(ValueError):
    """The web config file is unusable; the message names the key."""


@dataclass(frozen=True)
class WebConfig:
    tls: ssl.SSLContext | None = None
    users: Mapping[str, bytes] = field(default_factory=dict)
    headers: tuple[tuple[str, str], ...] = ()

    @property
    def dummy_hash(self) -> bytes:
        """A hash no password matches, at the highest cost among the users: an unknown user
        costs one bcrypt run, as a known one does, so timing does not tell names apart."""
        cost = max((int(h[4:6]) for h in self.users.values() if h[4:6].isdigit()), default=12)
        return b"$2b$%02d$" % cost + b"." * 53


def _require_mapping(value: Any, key: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise WebConfigError(f"{key}: must be a mapping")
    return value


def _path(base: str, value: Any, key: str) -> str:
    if not isinstance(value, str) or not value:
        raise WebConfigError(f"{key}: must be a file path")
    path = value if os.path.isabs(value) else os.path.join(base, value)
    if not os.access(path, os.R_OK):
        raise WebConfigError(f"{key}: cannot read {path}")
    return path


def _tls(doc: Mapping[str, Any], base: str) -> ssl.SSLContext | None:
    for key in doc:
        if key in _TLS_UNSUPPORTED:
            raise WebConfigError(f"tls_server_config.{key}: not supported by this exporter")
        if key not in _TLS_KEYS:
            raise WebConfigError(f"tls_server_config.{key}: unknown key")
    if not doc:
        return None
    if "cert_file" not in doc or "key_file" not in doc:
        raise WebConfigError("tls_server_config: cert_file and key_file are both required")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert = _path(base, doc["cert_file"], "tls_server_config.cert_file")
    key = _path(base, doc["key_file"], "tls_server_config.key_file")
    try:
        ctx.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as exc:
        raise WebConfigError(f"tls_server_config.cert_file: cannot load {cert} with its key: "
                             f"{exc}") from None
    for name, attr in (("min_version", "minimum_version"), ("max_version", "maximum_version")):
        if name in doc:
            if doc[name] not in _VERSIONS:
                raise WebConfigError(f"tls_server_config.{name}: one of {', '.join(_VERSIONS)}")
            setattr(ctx, attr, _VERSIONS[doc[name]])
        elif name == "min_version":
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    auth = doc.get("client_auth_type", "NoClientCert")
    if auth in _UNSUPPORTED_AUTH:
        raise WebConfigError(f"tls_server_config.client_auth_type: {auth} is not supported; use "
                             "VerifyClientCertIfGiven or RequireAndVerifyClientCert")
    if auth not in _CLIENT_AUTH:
        raise WebConfigError(f"tls_server_config.client_auth_type: one of "
                             f"{', '.join(_CLIENT_AUTH)}")
    ctx.verify_mode = _CLIENT_AUTH[auth]
    if ctx.verify_mode != ssl.CERT_NONE:
        ca = _path(base, doc.get("client_ca_file"), "tls_server_config.client_ca_file")
        try:
            ctx.load_verify_locations(ca)
        except (ssl.SSLError, OSError) as exc:
            raise WebConfigError(f"tls_server_config.client_ca_file: {exc}") from None
    elif "client_ca_file" in doc:
        _path(base, doc["client_ca_file"], "tls_server_config.client_ca_file")
    return ctx


def load(path: str) -> WebConfig:
    try:
        doc = yamlfile.load(path)
    except yamlfile.YamlFileError as exc:
        raise WebConfigError(str(exc)) from None
    doc = _require_mapping(doc, "web config")
    for key in doc:
        if key not in ("tls_server_config", "http_server_config", "basic_auth_users"):
            raise WebConfigError(f"{key}: unknown key")
    base = os.path.dirname(os.path.abspath(path))
    tls = _tls(_require_mapping(doc.get("tls_server_config"), "tls_server_config"), base)
    users: dict[str, bytes] = {}
    for user, hashed in _require_mapping(doc.get("basic_auth_users"),
                                         "basic_auth_users").items():
        if not isinstance(user, str) or not user or ":" in user:
            raise WebConfigError(f"basic_auth_users: {user!r} is not a user name")
        if not isinstance(hashed, str) or not hashed.startswith(("$2a$", "$2b$", "$2y$")):
            raise WebConfigError(f"basic_auth_users.{user}: must be a bcrypt hash")
        users[user] = hashed.encode()
    http = _require_mapping(doc.get("http_server_config"), "http_server_config")
    headers = []
    for key in http:
        if key not in ("headers", "http2"):
            raise WebConfigError(f"http_server_config.{key}: unknown key")
    if "http2" in http and not isinstance(http["http2"], bool):
        raise WebConfigError("http_server_config.http2: must be true or false")
    for name, value in _require_mapping(http.get("headers"),
                                        "http_server_config.headers").items():
        if not isinstance(name, str) or not isinstance(value, str) or "\n" in value + name:
            raise WebConfigError(f"http_server_config.headers.{name}: must be a string")
        if name.lower() in _FORBIDDEN_HEADERS:
            raise WebConfigError(f"http_server_config.headers.{name}: may not be set")
        headers.append((name, value))
    return WebConfig(tls, users, tuple(headers))


class WebConfigWatcher:
    """The web config in force; re-reads the file when its stat changes."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp = self._stat()
        self.current = load(path)
        self._auth_ok: dict[bytes, None] = {}
        self._broken_stamp: tuple[float, int, int] | None = None

    def _stat(self) -> tuple[float, int, int]:
        try:
            st = os.stat(self.path)
        except OSError:
            return (0.0, 0, 0)
        return (st.st_mtime, st.st_size, st.st_ino)

    def get(self) -> WebConfig:
        stamp = self._stat()
        if stamp == self._stamp:
            return self.current
        with self._lock:
            if stamp != self._stamp:
                try:
                    self.current = load(self.path)
                    self._auth_ok.clear()
                    log.info("web config %s reloaded", self.path)
                    self._broken_stamp = None
                except WebConfigError as exc:
                    if self._broken_stamp != stamp:
                        log.error("web config %s not reloaded, keeping the last good one: %s",
                                  self.path, exc)
                    self._broken_stamp = stamp
                    return self.current
                self._stamp = stamp
        return self.current

    def authorized(self, config: WebConfig, header: str | None) -> bool:
        """Basic auth against bcrypt hashes; a success is cached so bcrypt runs once."""
        if not config.users:
            return True
        if not header or not header.startswith("Basic "):
            return False
        try:
            user, sep, password = base64.b64decode(header[6:], validate=True).decode(
            ).partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        if not sep:
            return False
        hashed = config.users.get(user)
        if hashed is None:
            with contextlib.suppress(ValueError):
                bcrypt.checkpw(password.encode(), config.dummy_hash)
            return False
        key = hashlib.sha256(user.encode() + b"\0" + password.encode() + b"\0" + hashed).digest()
        with self._lock:
            if key in self._auth_ok:
                return True
        try:
            ok = bcrypt.checkpw(password.encode(), hashed)
        except ValueError:
            return False
        if ok:
            with self._lock:
                if len(self._auth_ok) >= _AUTH_CACHE:
                    self._auth_ok.clear()
                self._auth_ok[key] = None
        return ok
