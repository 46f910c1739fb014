"""Registry credentials: the exporter's own config first, then the Docker client config.

The Docker client config is read the way the docker CLI reads it: ``credHelpers`` for the
registry, else an ``auths`` entry, else ``credsStore``. Helpers are the real
``docker-credential-<name>`` programs, spoken to over stdin/stdout. Secrets never reach
logs, labels or error messages: Credentials masks itself in repr.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import subprocess
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from exporter.reference import DOCKER_HUB
from exporter.yamlfile import read_text

log = logging.getLogger(__name__)

MAX_CONFIG_BYTES = 1024 * 1024  # a config.json is a few kB

HUB_SERVER = "https://index.docker.io/v1/"
HELPER_TIMEOUT = 10.0
CACHE_SECONDS = 300.0


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r}, password=<masked>)"


def default_docker_config() -> str:
    return os.path.join(os.environ.get("DOCKER_CONFIG") or os.path.expanduser("~/.docker"),
                        "config.json")


def _server_url(registry: str) -> str:
    return HUB_SERVER if registry == DOCKER_HUB else registry


def _normalise_key(key: str) -> str:
    """"https://index.docker.io/v1/" -> "docker.io"; "http://host:5000/" -> "host:5000"."""
    host = key.split("://", 1)[-1].split("/", 1)[0]
    return DOCKER_HUB if host in ("index.docker.io", "registry-1.docker.io", "docker.io") else host


class CredentialStore:
    """Looks up credentials per registry host; caches answers for a few minutes."""

    def __init__(self, configured: Mapping[str, Credentials], docker_config: str | None) -> None:
        self.configured = {_normalise_key(k): v for k, v in configured.items()}
        self.docker_config = docker_config
        self._cache: dict[str, tuple[float, Credentials | None]] = {}
        self._lock = threading.Lock()

    def get(self, registry: str) -> Credentials | None:
        if registry in self.configured:
            return self.configured[registry]
        with self._lock:
            hit = self._cache.get(registry)
            if hit and time.monotonic() - hit[0] < CACHE_SECONDS:
                return hit[1]
        creds = self._from_docker_config(registry)
        with self._lock:
            self._cache[registry] = (time.monotonic(), creds)
        return creds

    def _load(self) -> dict[str, Any]:
        if not self.docker_config:
            return {}
        if not os.path.exists(self.docker_config):
            return {}
        try:
            doc = json.loads(read_text(self.docker_config, MAX_CONFIG_BYTES, self.docker_config))
        except (ValueError, RecursionError) as exc:
            log.warning("cannot read docker client config %s: %s", self.docker_config,
                        str(exc)[:200] if not isinstance(exc, json.JSONDecodeError) else
                        "not JSON")
            return {}
        return doc if isinstance(doc, dict) else {}

    def _from_docker_config(self, registry: str) -> Credentials | None:
        doc = self._load()
        helpers = doc.get("credHelpers")
        if isinstance(helpers, dict):
            for key, helper in helpers.items():
                if _normalise_key(key) == registry and isinstance(helper, str):
                    return run_helper(helper, _server_url(registry))
        auths = doc.get("auths")
        if isinstance(auths, dict):
            for key, entry in auths.items():
                if _normalise_key(key) == registry and isinstance(entry, dict):
                    creds = _decode_auth(entry)
                    if creds:
                        return creds
        store = doc.get("credsStore")
        if isinstance(store, str) and store:
            return run_helper(store, _server_url(registry))
        return None


def _decode_auth(entry: Mapping[str, Any]) -> Credentials | None:
    auth = entry.get("auth")
    if isinstance(auth, str) and auth:
        try:
            user, sep, password = base64.b64decode(auth, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return Credentials(user, password) if sep else None
    user, password = entry.get("username"), entry.get("password")
    if isinstance(user, str) and isinstance(password, str) and user:
        return Credentials(user, password)
    return None


def run_helper(name: str, server_url: str) -> Credentials | None:
    """``docker-credential-<name> get``: the server URL on stdin, JSON on stdout."""
    program = f"docker-credential-{name}"
    try:
        proc = subprocess.run([program, "get"], input=server_url.encode(), capture_output=True,
                              timeout=HELPER_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("credential helper %s failed for %s: %s", program, server_url,
                    type(exc).__name__)
        return None
    if proc.returncode != 0:
        # "credentials not found in native keychain" is the protocol's "no entry".
        return None
    try:
        doc = json.loads(proc.stdout)
        user, secret = doc["Username"], doc["Secret"]
    except (ValueError, KeyError, TypeError):
        log.warning("credential helper %s answered something that is not its JSON", program)
        return None
    if not isinstance(user, str) or not isinstance(secret, str) or user == "<token>":
        return None  # identity tokens (OAuth refresh tokens) are not supported
    return Credentials(user, secret)
