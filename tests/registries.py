"""Registry set-ups for the drift tests: real CNCF Distribution behind three kinds of auth,
a token server of our own (the part Docker Hub, GHCR and Harbor run), and a fault-injecting
proxy that sits between the exporter and the real registry.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import http.client
import json
import re
import threading
import time
import uuid
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import bcrypt
import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from tests.services import Registry, free_port

EXPORTER_UA = "docker-hygiene-exporter/"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
ACCESS_LOG = re.compile(
    r'"(?P<method>[A-Z]+) (?P<path>\S+) HTTP/[\d.]+" (?P<code>\d+) .* "(?P<ua>[^"]*)"$')


def access_log(reg: Registry, user_agent: str = EXPORTER_UA) -> Counter[tuple[str, str]]:
    """(method, kind) counts of requests by this user agent, from the registry's access log."""
    counts: Counter[tuple[str, str]] = Counter()
    for line in (reg.root / "registry.log").read_text().splitlines():
        m = ACCESS_LOG.search(line)
        if m and m.group("ua").startswith(user_agent):
            kind = "manifest" if "/manifests/" in m.group("path") else (
                "blob" if "/blobs/" in m.group("path") else "other")
            counts[(m.group("method"), kind)] += 1
    return counts


def registry_requests(reg: Registry) -> Counter[tuple[str, str]]:
    """(method, path) of every request the exporter made, from the registry's access log."""
    counts: Counter[tuple[str, str]] = Counter()
    pattern = re.compile(r'"([A-Z]+) (\S+) HTTP/[\d.]+" \d+ .* "([^"]*)"$')
    for line in (reg.root / "registry.log").read_text().splitlines():
        m = pattern.search(line)
        if m and m.group(3).startswith(EXPORTER_UA):
            counts[(m.group(1), m.group(2))] += 1
    return counts


def start_htpasswd_registry(root: Path, users: dict[str, str]) -> Registry:
    root.mkdir(parents=True, exist_ok=True)
    lines = [f"{u}:{bcrypt.hashpw(p.encode(), bcrypt.gensalt(rounds=5)).decode()}"
             for u, p in users.items()]
    (root / "htpasswd").write_text("\n".join(lines) + "\n")
    return Registry(root).start(
        f"auth:\n  htpasswd:\n    realm: test\n    path: {root / 'htpasswd'}\n")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenServer:
    """Issues RS256 JWTs with an x5c header, the way Distribution's token auth expects them.

    Requires Basic credentials from ``users``; counts token requests per scope.
    """

    service = "hygiene-test-registry"
    issuer = "hygiene-test-issuer"

    def __init__(self, root: Path, users: dict[str, str], expires_in: int = 300) -> None:
        self.root = root
        self.users = users
        self.expires_in = expires_in
        self.port = free_port()
        self.requests: Counter[str] = Counter()
        self.fail_with: int | None = None
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hygiene-token-issuer")])
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now - datetime.timedelta(days=1))
                     .not_valid_after(now + datetime.timedelta(days=30))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
                     .sign(self.key, hashes.SHA256()))
        root.mkdir(parents=True, exist_ok=True)
        self.bundle = root / "token-ca.pem"
        self.bundle.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                query = parse_qs(urlparse(self.path).query)
                scopes = query.get("scope", [])
                server.requests[" ".join(scopes) or "(none)"] += 1
                if server.fail_with:
                    self.send_response(server.fail_with)
                    self.end_headers()
                    return
                auth = self.headers.get("Authorization", "")
                user = None
                if auth.startswith("Basic "):
                    u, _, p = base64.b64decode(auth[6:]).decode().partition(":")
                    if server.users.get(u) == p:
                        user = u
                if user is None:
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="token"')
                    self.end_headers()
                    return
                body = json.dumps({"token": server.issue(user, scopes),
                                   "expires_in": server.expires_in}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    def issue(self, user: str, scopes: list[str]) -> str:
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        der = self.cert.public_bytes(serialization.Encoding.DER)
        header = {"alg": "RS256", "typ": "JWT", "x5c": [base64.b64encode(der).decode()]}
        claims = {"iss": self.issuer, "sub": user, "aud": self.service,
                  "exp": now + self.expires_in, "nbf": now - 10, "iat": now,
                  "jti": uuid.uuid4().hex, "access": access}
        signing_input = f"{_b64url(json.dumps(header).encode())}." \
                        f"{_b64url(json.dumps(claims).encode())}"
        signature = self.key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{_b64url(signature)}"

    def start(self) -> TokenServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def start_token_registry(root: Path, tokens: TokenServer) -> Registry:
    return Registry(root).start(
        "auth:\n  token:\n"
        f"    realm: {tokens.realm}\n    service: {tokens.service}\n"
        f"    issuer: {tokens.issuer}\n    rootcertbundle: {tokens.bundle}\n")


class FaultProxy:
    """An HTTP proxy in front of a real registry. Requests from the exporter (by User-Agent)
    can be made to fail; everyone else's pass through untouched.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self.mode: str = "pass"  # pass | strip_digest | status | delay | garbage | close
        self.status = 429
        self.headers: dict[str, str] = {}
        self.delay = 0.0
        self.response_headers: dict[str, str] = {}  # added to every answer to the exporter
        # The OCI referrers API, which Distribution 2.8 lacks: digest -> descriptors. None
        # passes referrers requests on to the registry (which answers 404).
        self.referrers: dict[str, list[dict]] | None = None
        # Tag list pages (n, last, Link) as the OCI distribution spec and Distribution 3 serve
        # them; Distribution 2.8 ignores n and answers with every tag at once.
        self.page_tags = False
        self.pages: list[str] = []  # the query of each tag list page asked for
        self.counts: Counter[tuple[str, str]] = Counter()
        # (pattern, status): exporter requests whose path matches are answered with that
        # status, after the delay of "delay" mode (a failing registry takes its time too).
        self.fail: tuple[str, int] | None = None
        # (started, answered, method, path) of every exporter request, time.monotonic().
        self.timeline: list[tuple[float, float, str, str]] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                        if size == 0:
                            self.rfile.readline()
                            return b"".join(chunks)
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _reply(self, code: int, headers: dict[str, str], body: bytes) -> None:
                self.send_response(code)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def handle_any(self) -> None:
                started = time.monotonic()
                try:
                    self._handle()
                finally:
                    if self.headers.get("User-Agent", "").startswith(EXPORTER_UA):
                        with proxy._lock:
                            proxy.timeline.append((started, time.monotonic(), self.command,
                                                   self.path.split("?")[0]))

            def _handle(self) -> None:
                body = self._body()
                ours = self.headers.get("User-Agent", "").startswith(EXPORTER_UA)
                if ours:
                    with proxy._lock:
                        proxy.counts[(self.command, self.path.split("?")[0])] += 1
                mode = proxy.mode if ours else "pass"
                found = re.fullmatch(r"/v2/.+/referrers/(sha256:[a-f0-9]{64})",
                                     self.path.split("?")[0])
                listing = re.fullmatch(r"/v2/(.+)/tags/list", self.path.split("?")[0])
                if listing and proxy.page_tags and ours:
                    self._reply(*proxy.tag_page(self.path, dict(self.headers)))
                    return
                if found and proxy.referrers is not None and self.command == "GET":
                    self._reply(200, {"Content-Type": OCI_INDEX}, json.dumps({
                        "schemaVersion": 2, "mediaType": OCI_INDEX,
                        "manifests": proxy.referrers.get(found.group(1), [])}).encode())
                    return
                if mode == "status":
                    self._reply(proxy.status, proxy.headers, b'{"errors":[]}')
                    return
                if mode == "close":
                    self.close_connection = True
                    self.wfile.flush()
                    self.connection.close()
                    return
                if mode == "delay":
                    time.sleep(proxy.delay)
                if ours and proxy.fail and re.search(proxy.fail[0], self.path.split("?")[0]):
                    self._reply(proxy.fail[1], {"Content-Type": "application/json"},
                                b'{"errors":[]}')
                    return
                conn = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=60)
                # Repeated fields (docker pull sends one Accept line per media type) are
                # joined, not cut to the last one: Distribution would answer a schema 1
                # manifest to an Accept of that type alone.
                headers: dict[str, str] = {}
                for k, v in self.headers.items():
                    if k.lower() not in ("transfer-encoding", "content-length", "connection"):
                        headers[k] = f"{headers[k]}, {v}" if k in headers else v
                headers["Content-Length"] = str(len(body))
                conn.request(self.command, self.path, body, headers)
                resp = conn.getresponse()
                data = resp.read()
                out = {k: v for k, v in resp.getheaders()
                       if k.lower() not in ("transfer-encoding", "content-length", "connection")}
                if mode == "strip_digest":
                    out = {k: v for k, v in out.items() if k.lower() != "docker-content-digest"}
                if ours:
                    out.update(proxy.response_headers)
                if mode == "huge" and "/manifests/" in self.path:
                    out = {k: v for k, v in out.items() if k.lower() != "docker-content-digest"}
                    data = b" " * (5 * 1024 * 1024)
                if mode == "garbage" and "/manifests/" in self.path:
                    data = b"\x00not json at all" * 10
                    out = {k: v for k, v in out.items() if k.lower() not in (
                        "docker-content-digest", "content-type")}
                conn.close()
                if self.command == "HEAD":
                    self.send_response(resp.status)
                    for k, v in out.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", resp.getheader("Content-Length") or "0")
                    self.end_headers()
                    return
                self._reply(resp.status, out, data)

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = handle_any

        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def tag_page(self, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        url = urlparse(path)
        self.pages.append(url.query)
        query = parse_qs(url.query)
        r = httpx.get(f"http://127.0.0.1:{self.upstream_port}{url.path}", headers={
            k: v for k, v in headers.items() if k.lower() == "authorization"})
        if r.status_code != 200:
            return r.status_code, {"Content-Type": "application/json"}, r.content
        doc = r.json()
        tags = sorted(doc.get("tags") or [])
        if "last" in query:
            tags = [t for t in tags if t > query["last"][0]]
        out = {"Content-Type": "application/json"}
        if "n" in query:
            n = int(query["n"][0])
            if len(tags) > n:
                out["Link"] = f'<{url.path}?last={tags[n - 1]}&n={n}>; rel="next"'
            tags = tags[:n]
        return 200, out, json.dumps({"name": doc["name"], "tags": tags}).encode()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> FaultProxy:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def put_index(address: str, repository: str, tag: str,
              entries: list[tuple[str, str]]) -> str:
    """Push a manifest list (as `docker manifest push` does) of (source tag, arch) entries."""
    manifests = []
    for source_tag, arch in entries:
        r = httpx.get(f"http://{address}/v2/{repository}/manifests/{source_tag}", headers={
            "Accept": f"{DOCKER_MANIFEST}, {OCI_MANIFEST}"})
        r.raise_for_status()
        manifests.append({
            # Docker pushes Docker manifests; Podman pushes OCI ones.
            "mediaType": r.headers.get("content-type", DOCKER_MANIFEST),
            "size": len(r.content),
            "digest": "sha256:" + hashlib.sha256(r.content).hexdigest(),
            "platform": {"architecture": arch, "os": "linux"},
        })
    body = json.dumps({
        "schemaVersion": 2,
        "mediaType": DOCKER_LIST,
        "manifests": manifests}, indent=3).encode()
    r = httpx.put(f"http://{address}/v2/{repository}/manifests/{tag}", content=body, headers={
        "Content-Type": DOCKER_LIST})
    r.raise_for_status()
    return "sha256:" + hashlib.sha256(body).hexdigest()


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def put_blob(address: str, repository: str, data: bytes) -> str:
    """A monolithic blob upload (POST, then PUT with the digest), as clients do."""
    digest = digest_of(data)
    r = httpx.post(f"http://{address}/v2/{repository}/blobs/uploads/")
    r.raise_for_status()
    location = r.headers["location"]
    if location.startswith("/"):
        location = f"http://{address}{location}"
    sep = "&" if "?" in location else "?"
    r = httpx.put(f"{location}{sep}digest={digest}", content=data,
                  headers={"Content-Type": "application/octet-stream"})
    r.raise_for_status()
    return digest


def put_manifest(address: str, repository: str, tag: str, doc: dict,
                 media_type: str = DOCKER_MANIFEST) -> str:
    body = json.dumps(doc, indent=2).encode()
    r = httpx.put(f"http://{address}/v2/{repository}/manifests/{tag}", content=body,
                  headers={"Content-Type": media_type})
    r.raise_for_status()
    return digest_of(body)


def descriptor(address: str, repository: str, tag: str) -> dict:
    """What ``tag`` serves, as it is served (an index stays an index), as a descriptor: the
    subject `cosign sign <tag>` signs."""
    accept = ", ".join((OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST))
    r = httpx.head(f"http://{address}/v2/{repository}/manifests/{tag}",
                   headers={"Accept": accept})
    r.raise_for_status()
    return {"mediaType": r.headers["content-type"], "digest": r.headers["docker-content-digest"],
            "size": int(r.headers["content-length"])}


def get_manifest(address: str, repository: str, tag: str) -> dict:
    r = httpx.get(f"http://{address}/v2/{repository}/manifests/{tag}",
                  headers={"Accept": DOCKER_MANIFEST})
    r.raise_for_status()
    return r.json()


def push_variant(address: str, repository: str, tag: str, base: dict, created: str,
                 arch: str) -> str:
    """Push ``base`` (an image manifest already in the repository) under ``tag`` with a new
    config saying ``created`` and ``arch``: a distinct image without a build. Its digest."""
    config = httpx.get(f"http://{address}/v2/{repository}/blobs/{base['config']['digest']}")
    config.raise_for_status()
    doc = config.json()
    doc.update(created=created, architecture=arch)
    data = json.dumps(doc).encode()
    manifest = dict(base, config=dict(base["config"], digest=put_blob(address, repository, data),
                                      size=len(data)))
    return put_manifest(address, repository, tag, manifest)


def put_cosign_signature(address: str, repository: str, signed: str) -> str:
    """What ``cosign sign`` pushes by default: an OCI manifest under ``sha256-<hex>.sig``
    whose layer is the simple-signing payload, with the signature in an annotation."""
    payload = json.dumps({"critical": {"identity": {"docker-reference": repository},
                                       "image": {"docker-manifest-digest": signed},
                                       "type": "cosign container image signature"},
                          "optional": None}).encode()
    config = json.dumps({"architecture": "", "os": "", "config": {},
                         "rootfs": {"type": "layers", "diff_ids": [digest_of(payload)]}}).encode()
    doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                      "digest": put_blob(address, repository, config), "size": len(config)},
           "layers": [{"mediaType": "application/vnd.dev.cosign.simplesigning.v1+json",
                       "digest": put_blob(address, repository, payload), "size": len(payload),
                       "annotations": {"dev.cosignproject.cosign/signature": "MEUCIQDtest"}}]}
    return put_manifest(address, repository, signed.replace(":", "-") + ".sig", doc,
                        OCI_MANIFEST)


def copy_manifest(address: str, source: str, repository: str, tag: str) -> str:
    """Put the image ``source`` ("repo:tag" in the same registry) under ``repository:tag``,
    mounting its blobs across repositories as clients do; returns its digest."""
    src_repo, _, src_tag = source.rpartition(":")
    r = httpx.get(f"http://{address}/v2/{src_repo}/manifests/{src_tag}",
                  headers={"Accept": DOCKER_MANIFEST + ", " + OCI_MANIFEST})
    r.raise_for_status()
    doc = r.json()
    for blob in [doc["config"], *doc.get("layers", [])]:
        m = httpx.post(f"http://{address}/v2/{repository}/blobs/uploads/",
                       params={"mount": blob["digest"], "from": src_repo})
        if m.status_code != 201:
            raise RuntimeError(f"mount of {blob['digest']} failed: {m.status_code} {m.text}")
    p = httpx.put(f"http://{address}/v2/{repository}/manifests/{tag}", content=r.content,
                  headers={"Content-Type": r.headers["Content-Type"]})
    p.raise_for_status()
    return digest_of(r.content)


def delete_manifest(address: str, repository: str, digest: str) -> None:
    """Delete a manifest by digest (the registry runs with storage.delete enabled)."""
    r = httpx.delete(f"http://{address}/v2/{repository}/manifests/{digest}")
    r.raise_for_status()
