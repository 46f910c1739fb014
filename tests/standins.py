"""Stand-ins for what cannot run here: the Docker Hub API and Harbor's API.

They answer with the shapes the services document (Docker Hub API 2-beta reference:
repository, auth token, X-RateLimit-* and 429 + Retry-After; Harbor v2.0 API: paginated
repository lists with X-Total-Count and Link), and count what they were asked.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from tests.services import free_port


class _StandIn:
    def __init__(self) -> None:
        self.port = free_port()
        self.requests: Counter[str] = Counter()
        self.rate_limited: dict[str, str] | None = None  # headers of a 429, when set
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def reply(self, code: int, doc: object, headers: dict[str, str] | None = None):
                body = json.dumps(doc).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                standin.requests[f"GET {urlparse(self.path).path}"] += 1
                if standin.rate_limited is not None:
                    self.reply(429, {"message": "Too Many Requests"}, standin.rate_limited)
                    return
                standin.get(self)

            def do_POST(self) -> None:
                standin.requests[f"POST {urlparse(self.path).path}"] += 1
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                standin.post(self, body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, h) -> None:
        h.reply(404, {"message": "not found"})

    def post(self, h, body: bytes) -> None:
        h.reply(404, {"message": "not found"})

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class DockerHub(_StandIn):
    """GET /v2/namespaces/{ns}/repositories/{repo}, its /tags (pages of page_size, at most
    100, newest push first, with ``next``) and /tags/{tag}; POST /v2/auth/token."""

    TOKEN = "hub-jwt-for-tests"

    def __init__(self, repositories: dict[str, tuple[int, int, str]],
                 login: tuple[str, str] | None = None, grow: int = 0,
                 tags: dict[str, list[dict]] | None = None) -> None:
        self.repositories = repositories  # "ns/name" -> (pull_count, star_count, last_updated)
        # "ns/name" -> tag objects as the API gives them (name, images, tag_last_pushed, ...)
        self.tags = tags or {}
        self.login = login
        self.grow = grow  # pulls added per read, as a busy repository would have
        self.remaining = 180
        super().__init__()

    def post(self, h, body: bytes) -> None:
        if urlparse(h.path).path != "/v2/auth/token":
            return h.reply(404, {"message": "not found"})
        doc = json.loads(body or b"{}")
        if self.login and (doc.get("identifier"), doc.get("secret")) == self.login:
            return h.reply(200, {"access_token": self.TOKEN})
        return h.reply(401, {"errinfo": {}, "message": "Incorrect authentication credentials"})

    def get(self, h) -> None:
        url = urlparse(h.path)
        if self.login and h.headers.get("Authorization") != f"Bearer {self.TOKEN}":
            return h.reply(401, {"message": "authentication required"})
        t = re.fullmatch(r"/v2/namespaces/([^/]+)/repositories/([^/]+)/tags(?:/([^/]+))?/?",
                         url.path)
        if t:
            return self.get_tags(h, f"{t.group(1)}/{t.group(2)}", t.group(3), url.query)
        m = re.fullmatch(r"/v2/namespaces/([^/]+)/repositories/([^/]+)/?", url.path)
        if not m or f"{m.group(1)}/{m.group(2)}" not in self.repositories:
            return h.reply(404, {"message": "object not found"})
        pulls, stars, updated = self.repositories[f"{m.group(1)}/{m.group(2)}"]
        self.remaining -= 1
        pulls += self.grow * sum(self.requests.values())
        h.reply(200, {
            "name": m.group(2), "namespace": m.group(1), "repository_type": "image",
            "status": 1, "status_description": "active", "description": "", "is_private": False,
            "star_count": stars, "pull_count": pulls, "last_updated": updated,
            "last_modified": updated, "date_registered": "2014-06-05T19:14:45.177548Z",
            "affiliation": "", "media_types": ["application/vnd.oci.image.index.v1+json"],
            "content_types": ["image"], "categories": [], "storage_size": 123456},
            {"X-RateLimit-Limit": "180", "X-RateLimit-Remaining": str(self.remaining),
             "X-RateLimit-Reset": "1795840000"})


    def get_tags(self, h, repository: str, tag: str | None, query: str) -> None:
        if repository not in self.tags:
            return h.reply(404, {"message": "object not found", "errinfo": {}})
        found = sorted(self.tags[repository], key=lambda t: t.get("tag_last_pushed", ""),
                       reverse=True)
        if tag is not None:
            match = [t for t in found if t["name"] == tag]
            return h.reply(200, match[0]) if match else h.reply(
                404, {"message": "tag not found", "errinfo": {}})
        params = parse_qs(query)
        page = int(params.get("page", ["1"])[0])
        size = min(int(params.get("page_size", ["10"])[0]), 100)
        chunk = found[(page - 1) * size: page * size]
        more = page * size < len(found)
        namespace, _, name = repository.partition("/")
        h.reply(200, {"count": len(found), "previous": None, "results": chunk,
                      "next": f"{self.url}/v2/namespaces/{namespace}/repositories/{name}/tags"
                              f"?page={page + 1}&page_size={size}" if more else None})


def hub_tag(name: str, pushed: str, platforms: list[tuple[str, str]]) -> dict:
    """A tag object in the Hub API's shape, with one image per (os, architecture)."""
    return {
        "id": abs(hash(name)) % 10**8, "creator": 1, "last_updater": 1,
        "last_updater_username": "hygiene", "last_updated": pushed, "name": name,
        "repository": 1, "full_size": 1234567, "v2": True, "tag_status": "active",
        "tag_last_pulled": pushed, "tag_last_pushed": pushed,
        "media_type": "application/vnd.oci.image.index.v1+json", "content_type": "image",
        "digest": "sha256:" + "0" * 64,
        "images": [{"architecture": arch, "features": "", "variant": None,
                    "digest": "sha256:" + "1" * 64, "os": os_name, "os_features": "",
                    "os_version": None, "size": 1234567, "status": "active",
                    "last_pulled": pushed, "last_pushed": pushed}
                   for os_name, arch in platforms]}


class Harbor(_StandIn):
    """GET /api/v2.0/projects/{project}/repositories?page=&page_size= with Basic auth."""

    def __init__(self, projects: dict[str, dict[str, int]], login: tuple[str, str],
                 grow: int = 0) -> None:
        self.projects = projects  # project -> {repository: pull_count}
        self.login = login
        self.grow = grow  # pulls added per read
        super().__init__()

    def get(self, h) -> None:
        url = urlparse(h.path)
        m = re.fullmatch(r"/api/v2.0/projects/([^/]+)/repositories", url.path)
        expected = "Basic " + base64.b64encode(":".join(self.login).encode()).decode()
        if h.headers.get("Authorization") != expected:
            return h.reply(401, {"errors": [{"code": "UNAUTHORIZED", "message": "unauthorized"}]})
        if not m or m.group(1) not in self.projects:
            return h.reply(404, {"errors": [{"code": "NOT_FOUND", "message": "not found"}]})
        project = m.group(1)
        query = parse_qs(url.query)
        page = int(query.get("page", ["1"])[0])
        size = int(query.get("page_size", ["10"])[0])
        names = sorted(self.projects[project])
        chunk = names[(page - 1) * size: page * size]
        items = [{"id": i, "name": f"{project}/{n}", "project_id": 1, "description": "",
                  "artifact_count": 1,
                  "pull_count": self.projects[project][n] + self.grow * sum(
                      self.requests.values()),
                  "creation_time": "2026-01-01T00:00:00.000Z",
                  "update_time": "2026-01-02T00:00:00.000Z"} for i, n in enumerate(chunk)]
        headers = {"X-Total-Count": str(len(names))}
        if page * size < len(names):
            headers["Link"] = (f'</api/v2.0/projects/{project}/repositories?page={page + 1}'
                               f'&page_size={size}>; rel="next"')
        h.reply(200, items, headers)
