"""Registry client: manifest HEADs and GETs with the auth and transport the engine uses.

- Accept lists index and manifest types, so a registry answers with the digest of what a
  ``docker pull`` by tag resolves first (the index for multi-arch images).
- Auth: anonymous, then whatever the 401 challenge asks for: Basic, or a Bearer token from
  the realm, cached per (realm, service, scope) until it expires. After the first challenge
  a registry is asked with credentials straight away, saving a 401 per request.
- Transport: HTTPS with certificate checks; for registries the engine treats as insecure,
  HTTPS without checks and then plain HTTP, as the engine does. Connections are kept and
  reused (``transport.Http``): a cycle opens about one per request in flight, not one per
  request.
- Every request is admitted by the request policy (``policy.py``): per-registry health and
  back-off, concurrency, a deadline on the whole request; bodies are capped while they stream.
  Responses are counted per (registry, method, code) there; rate-limit headers are kept.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import httpx

from exporter.locks import KeyedLocks
from exporter.reference import DOCKER_HUB
from exporter.registry import transport
from exporter.registry.credentials import CredentialStore
from exporter.registry.manifest import (
    ACCEPT,
    DIGEST,
    INDEX_TYPES,
    MANIFEST_TYPES,
    Manifest,
    RegistryError,
)
from exporter.registry.policy import Counters, RequestPolicy, parse_retry_after

MAX_MANIFEST_BYTES = 4 * 1024 * 1024
MAX_TOKEN_BYTES = 64 * 1024
TAG_PAGE = 1000
MAX_TAG_PAGES = 100  # a registry that pages without end is cut off here
MAX_TOKENS = 1024  # cached bearer tokens, one per (realm, service, scope); oldest dropped
MAX_HEADS = 20_000  # digests recently served, kept for fresh_for
DEFAULT_TOKEN_SECONDS = 60.0
_CHALLENGE_PARAM = re.compile(r'([A-Za-z_][A-Za-z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,"]*))')


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="...",service="..."`` -> ("bearer", {"realm": ..., "service": ...})."""
    scheme, _, rest = header.strip().partition(" ")
    params = {}
    for m in _CHALLENGE_PARAM.finditer(rest):
        value = m.group(2) if m.group(2) is not None else m.group(3)
        params[m.group(1).lower()] = re.sub(r"\\(.)", r"\1", value)
    return scheme.lower(), params


def parse_ratelimit(header: str | None) -> int | None:
    """``100;w=21600`` -> 100."""
    if not header:
        return None
    m = re.match(r"\s*(\d{1,12})\b", header)
    return int(m.group(1)) if m else None


def next_link(header: str, repository: str) -> str | None:
    """The path of a ``Link: </v2/...>; rel="next"`` header, kept to this repository's tag
    list so a registry cannot send us elsewhere."""
    m = re.match(r'\s*<([^>]*)>\s*;\s*rel="?next"?', header or "")
    if not m:
        return None
    url = httpx.URL(m.group(1))
    path = url.raw_path.decode("ascii", "replace")
    return path if path.startswith(f"/v2/{repository}/tags/list") else None


def basic_auth(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def api_host(registry: str) -> str:
    return "registry-1.docker.io" if registry == DOCKER_HUB else registry


class RegistryClient:
    """Thread-safe; one instance serves every registry the exporter talks to."""

    def __init__(self, credentials: CredentialStore, insecure: Callable[[str], bool],
                 policy: RequestPolicy, fresh_for: float = 60.0) -> None:
        self.credentials = credentials
        self.insecure = insecure
        self.policy = policy
        # A digest the registry served this recently is not asked for again: the drift and
        # versions loops may want the same tag within one cycle.
        self.fresh_for = fresh_for
        self._lock = threading.Lock()
        self._clients: dict[bool, transport.Http] = {}
        self._schemes: dict[str, str] = {}
        self._challenges: dict[str, tuple[str, dict[str, str]]] = {}
        self._tokens: OrderedDict[tuple[str, str, str], tuple[str, float]] = OrderedDict()
        self._token_locks = KeyedLocks()
        self._heads: OrderedDict[tuple[str, str, str], tuple[str, float]] = OrderedDict()
        self._first_contact = KeyedLocks()
        self._contacted: set[str] = set()

    # -- transport ---------------------------------------------------------------------------

    def _client(self, verify: bool) -> transport.Http:
        client = self._clients.get(verify)
        if client is None:
            with self._lock:
                client = self._clients.get(verify)
                if client is None:
                    client = self._clients[verify] = transport.Http(
                        self.policy.timeout, verify, self.policy.per_host)
        return client

    def _send(self, registry: str, method: str, url_path: str, headers: dict[str, str],
              max_bytes: int = MAX_MANIFEST_BYTES) -> transport.Answer:
        """One exchange, over the scheme this registry speaks; the body is capped while it
        streams. Runs inside an admitted request (``_request``)."""
        host = api_host(registry)
        schemes = [self._schemes[registry]] if registry in self._schemes else (
            ["https", "http"] if self.insecure(registry) else ["https"])
        last: Exception | None = None
        for scheme in schemes:
            try:
                response = self._fetch(not self.insecure(registry), method,
                                       f"{scheme}://{host}{url_path}", headers, max_bytes)
            except httpx.TimeoutException as exc:
                self.policy.count(registry, method, "timeout")
                raise RegistryError("timeout", f"{method} {host}: no whole answer within "
                                    f"{self.policy.timeout:g}s") from exc
            except (httpx.ConnectError, httpx.ReadError, httpx.WriteError,
                    httpx.RemoteProtocolError) as exc:
                last = exc
                self._schemes.pop(registry, None)
                continue
            except httpx.HTTPError as exc:  # an answer we cannot read (encoding, protocol)
                self.policy.count(registry, method, "error")
                raise RegistryError("bad_response", f"{method} {host}: "
                                    f"{transport.why(exc)}") from exc
            self._schemes[registry] = scheme
            self.policy.count(registry, method, str(response.status_code))
            self.policy.ratelimit(registry,
                                  parse_ratelimit(response.headers.get("ratelimit-limit")),
                                  parse_ratelimit(response.headers.get("ratelimit-remaining")))
            return response
        self.policy.count(registry, method, "error")
        cause = transport.why(last)
        if "CERTIFICATE" in cause.upper() or "SSL" in cause.upper():
            raise RegistryError("tls_error", f"{host}: TLS: {cause}") from last
        raise RegistryError("unreachable", f"{host}: connect: {cause}") from last

    def _fetch(self, verify: bool, method: str, url: str, headers: dict[str, str],
               max_bytes: int) -> transport.Answer:
        try:
            return self._client(verify).request(method, url, headers, max_bytes)
        except transport.TooLarge as exc:
            raise RegistryError("bad_response", str(exc)) from None

    # -- auth --------------------------------------------------------------------------------

    def _auth_header(self, registry: str, scope: str, refused: str | None = None) -> str | None:
        """The Authorization value for the registry's challenge; ``refused`` is the value a
        401 just answered, so a cached token equal to it is fetched anew."""
        challenge = self._challenges.get(registry)
        if challenge is None:
            return None
        scheme, params = challenge
        creds = self.credentials.get(registry)
        if scheme == "basic":
            if creds is None:
                raise RegistryError("auth_failed", f"{registry} needs credentials")
            return basic_auth(creds.username, creds.password)
        if scheme == "bearer":
            stale = refused[len("Bearer "):] if refused and refused.startswith("Bearer ") else None
            return "Bearer " + self._token(registry, params, scope, stale)
        raise RegistryError("auth_failed", f"unsupported auth scheme {scheme!r}")

    def _token(self, registry: str, params: dict[str, str], scope: str,
               stale: str | None) -> str:
        realm, service = params.get("realm", ""), params.get("service", "")
        if not realm.startswith(("https://", "http://")):
            raise RegistryError("auth_failed", "bearer challenge without a usable realm")
        key = (realm, service, scope)
        with self._token_locks.hold(key):
            with self._lock:
                cached = self._tokens.get(key)
            if cached and cached[0] != stale and cached[1] > time.monotonic():
                return cached[0]
            creds = self.credentials.get(registry)
            query = {"service": service, "scope": scope} if service else {"scope": scope}
            headers = {"Authorization": basic_auth(creds.username, creds.password)} \
                if creds else {}
            url = str(httpx.URL(realm, params=query))
            try:
                response = self._fetch(not self.insecure(registry), "GET", url, headers,
                                       MAX_TOKEN_BYTES)
            except httpx.TimeoutException as exc:
                self.policy.count(registry, "TOKEN", "timeout")
                raise RegistryError("timeout", f"token server {httpx.URL(realm).host}: no "
                                    "whole answer in time") from exc
            except httpx.HTTPError as exc:
                self.policy.count(registry, "TOKEN", "error")
                raise RegistryError("token_error", f"token server {httpx.URL(realm).host}: "
                                    f"{transport.why(exc)}") from exc
            except RegistryError as exc:
                self.policy.count(registry, "TOKEN", "error")
                raise RegistryError("token_error", str(exc)) from None
            self.policy.count(registry, "TOKEN", str(response.status_code))
            if response.status_code in (401, 403):
                raise RegistryError("auth_failed", f"token server answered {response.status_code}")
            if response.status_code == 429:
                raise RegistryError("rate_limited", "token server",
                                    parse_retry_after(response.headers.get("retry-after")))
            if response.status_code != 200:
                raise RegistryError("token_error", f"token server answered "
                                    f"{response.status_code}")
            try:
                doc = json.loads(response.content)
                token = doc.get("token") or doc.get("access_token")
                lifetime = float(doc.get("expires_in") or DEFAULT_TOKEN_SECONDS)
            except (ValueError, AttributeError, TypeError, RecursionError):
                raise RegistryError("token_error", "token answer is not JSON") from None
            if not isinstance(token, str) or not token:
                raise RegistryError("token_error", "token answer without a token")
            if not math.isfinite(lifetime):
                lifetime = DEFAULT_TOKEN_SECONDS
            lifetime = max(1.0, min(lifetime, 86400.0))
            # Renew a little early so a token does not expire between check and use.
            expires = time.monotonic() + lifetime - min(10.0, lifetime / 10)
            with self._lock:
                self._tokens[key] = (token, expires)
                self._tokens.move_to_end(key)
                _evict(self._tokens, MAX_TOKENS)
            return token

    # -- requests ----------------------------------------------------------------------------

    def _request(self, registry: str, method: str, path: str, repository: str,
                 redirects: bool = False, accept: str = ACCEPT) -> transport.Answer:
        """One request, admitted by the policy, which learns how the registry fared."""
        try:
            with self.policy.admit(registry):
                response = self._authorized(registry, method, path, repository, redirects,
                                            accept)
        except RegistryError as exc:
            if exc.retry_at is None:  # not a refusal by the policy itself
                self.policy.failed(registry, exc)
            raise
        self.policy.succeeded(registry)
        return response

    def _authorized(self, registry: str, method: str, path: str, repository: str,
                    redirects: bool, accept: str) -> transport.Answer:
        if registry not in self._contacted:
            # Learn the registry's scheme and auth challenge once, from GET /v2/ as docker
            # does; the others wait for it instead of each collecting a 401 of their own.
            with self._first_contact.hold(registry):
                self.policy.refuse_if_blocked(registry)  # the first contact may have failed
                if registry not in self._contacted:
                    self._ping(registry)
                    self._contacted.add(registry)
        scope = f"repository:{repository}:pull"
        response = None
        sent: str | None = None
        for attempt in range(2):
            headers = {"Accept": accept}
            sent = self._auth_header(registry, scope, refused=sent if attempt else None)
            if sent:
                headers["Authorization"] = sent
            response = self._send(registry, method, path, headers)
            if response.status_code != 401 or attempt:
                break
            challenge = response.headers.get("www-authenticate")
            if not challenge:
                raise RegistryError("auth_failed", "401 without a challenge")
            known = self._challenges.get(registry)
            self._challenges[registry] = parse_challenge(challenge)
            if sent and known == self._challenges[registry] and known[0] == "basic":
                break  # the credentials we sent were refused
        assert response is not None
        code = response.status_code
        if redirects and code in (302, 303, 307, 308) and response.headers.get("location"):
            return response
        if code in (401, 403):
            raise RegistryError("auth_failed", f"{registry} answered {code}")
        if code == 404:
            raise RegistryError("not_found", f"{path}")
        if code == 429:
            raise RegistryError("rate_limited", f"{registry} answered 429",
                                parse_retry_after(response.headers.get("retry-after")))
        if code >= 500:
            raise RegistryError("server_error", f"{registry} answered {code}")
        if code != 200:
            raise RegistryError("bad_response", f"{registry} answered {code}")
        return response

    def _ping(self, registry: str) -> None:
        response = self._send(registry, "GET", "/v2/", {})
        challenge = response.headers.get("www-authenticate")
        if response.status_code == 401 and challenge:
            self._challenges[registry] = parse_challenge(challenge)
        elif response.status_code == 429:
            raise RegistryError("rate_limited", f"{registry} answered 429",
                                parse_retry_after(response.headers.get("retry-after")))
        elif response.status_code >= 500:
            raise RegistryError("server_error", f"{registry} answered {response.status_code}")

    def head_digest(self, registry: str, repository: str, tag: str) -> str:
        """The digest the registry serves for a tag now: HEAD, or GET when it omits it."""
        key = (registry, repository, tag)
        with self._lock:
            recent = self._heads.get(key)
        if recent and time.monotonic() - recent[1] < self.fresh_for:
            return recent[0]
        response = self._request(registry, "HEAD", f"/v2/{repository}/manifests/{tag}",
                                 repository)
        digest = response.headers.get("docker-content-digest", "").strip()
        if not DIGEST.fullmatch(digest):
            self.policy.fallback(registry)
            digest = self.get_manifest(registry, repository, tag).digest
        with self._lock:
            self._heads[key] = (digest, time.monotonic())
            self._heads.move_to_end(key)
            _evict(self._heads, MAX_HEADS)
        return digest

    def get_manifest(self, registry: str, repository: str, reference: str) -> Manifest:
        """GET a manifest by tag or digest; its digest is the sha256 of the exact bytes."""
        response = self._request(registry, "GET", f"/v2/{repository}/manifests/{reference}",
                                 repository)
        body = response.content
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        if reference.startswith("sha256:") and digest != reference:
            raise RegistryError("bad_response", "manifest does not match its digest")
        media_type = response.headers.get("content-type", "").split(";")[0].strip()
        manifest = Manifest(digest, media_type, body)
        if manifest.media_type not in INDEX_TYPES | MANIFEST_TYPES:
            doc = manifest.document()
            media_type = doc.get("mediaType") if isinstance(doc.get("mediaType"), str) else ""
            manifest = Manifest(digest, media_type, body)
        return manifest

    def list_tags(self, registry: str, repository: str, limit: int) -> tuple[list[str], bool]:
        """The repository's tags, following ``Link`` pages, at most ``limit`` of them; and
        whether the list was cut short (at ``limit``, at MAX_TAG_PAGES pages, or because
        the registry sent us round a page we had already read)."""
        tags: list[str] = []
        path: str | None = f"/v2/{repository}/tags/list?n={min(TAG_PAGE, limit)}"
        seen: set[str] = set()
        while path is not None:
            if path in seen or len(seen) >= MAX_TAG_PAGES:
                return list(dict.fromkeys(tags)), True
            seen.add(path)
            response = self._request(registry, "GET", path, repository)
            try:
                page = json.loads(response.content).get("tags") or []
            except (ValueError, AttributeError, RecursionError):
                raise RegistryError("bad_response", "tag list is not JSON") from None
            if not isinstance(page, list):
                raise RegistryError("bad_response", "tag list without a list of tags")
            if not page:
                break
            tags.extend(t for t in page if isinstance(t, str))
            if len(tags) >= limit:
                return list(dict.fromkeys(tags))[:limit], True
            path = next_link(response.headers.get("link", ""), repository)
        return list(dict.fromkeys(tags)), False

    def get_blob(self, registry: str, repository: str, digest: str,
                 max_bytes: int = MAX_MANIFEST_BYTES) -> bytes:
        """A small blob (an image config) by digest, checked against it. Registries that keep
        blobs elsewhere answer with a redirect, followed once, without our credentials."""
        try:
            with self.policy.admit(registry):
                response = self._authorized(registry, "GET", f"/v2/{repository}/blobs/{digest}",
                                            repository, True, ACCEPT)
                if response.status_code != 200:
                    response = self._redirected(registry, response.headers["location"],
                                                max_bytes)
        except RegistryError as exc:
            if exc.retry_at is None:
                self.policy.failed(registry, exc)
            raise
        self.policy.succeeded(registry)
        body = response.content
        if len(body) > max_bytes or "sha256:" + hashlib.sha256(body).hexdigest() != digest:
            raise RegistryError("bad_response", "blob does not match its digest")
        return body

    def _redirected(self, registry: str, location: str, max_bytes: int) -> transport.Answer:
        try:
            response = self._fetch(not self.insecure(registry), "GET", location, {}, max_bytes)
        except httpx.TimeoutException as exc:
            self.policy.count(registry, "GET", "timeout")
            raise RegistryError("timeout", "blob redirect: no whole answer in time") from exc
        except httpx.HTTPError as exc:
            self.policy.count(registry, "GET", "error")
            raise RegistryError("unreachable", f"blob redirect: {transport.why(exc)}") from exc
        self.policy.count(registry, "GET", str(response.status_code))
        if response.status_code != 200:
            raise RegistryError("bad_response", f"blob redirect answered "
                                f"{response.status_code}")
        return response

    def referrers(self, registry: str, repository: str, digest: str) -> list[dict[str, Any]] | None:
        """Descriptors from the OCI referrers API; None when the registry does not serve it."""
        try:
            response = self._request(registry, "GET", f"/v2/{repository}/referrers/{digest}",
                                     repository)
        except RegistryError as exc:
            if exc.reason in ("not_found", "bad_response"):
                return None
            raise
        try:
            doc = json.loads(response.content)
        except (ValueError, UnicodeDecodeError, RecursionError):
            return None
        entries = doc.get("manifests") if isinstance(doc, dict) else None
        return [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else None

    def close(self) -> None:
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()

    def counters(self) -> Counters:
        """Rate-limit headers, requests and digest fallbacks so far."""
        return self.policy.counters()


def _evict(cache: OrderedDict[Any, Any], cap: int) -> None:
    while len(cache) > cap:
        cache.popitem(last=False)
