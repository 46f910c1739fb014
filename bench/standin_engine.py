"""A stand-in Docker Engine on a unix socket that serves Engine API JSON of any size.

The shapes are those of the answers recorded from dockerd 20.10 (tests/fixtures/engine-1.41):
only the counts are made up. Paths can be made slow, to measure scrapes while the engine is.
"""

from __future__ import annotations

import contextlib
import json
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path


def _hex(n: int, salt: str) -> str:
    import hashlib

    return hashlib.sha256(f"{salt}{n}".encode()).hexdigest()


class StandInEngine:
    def __init__(self, socket_path: Path, tags: int, containers: int,
                 tags_per_image: int = 10,
                 pulled: list[tuple[str, list[str], str]] | None = None) -> None:
        """``pulled``: (image ID, tags, repo digest) of real images, instead of made-up ones."""
        self.socket_path = socket_path
        self.delays: dict[str, float] = {}
        images = len(pulled) if pulled else max(1, tags // tags_per_image)
        now = int(time.time())
        self.images = []
        for i, (image_id, refs, digest) in enumerate(pulled or []):
            self.images.append({
                "Containers": -1, "Created": now, "Id": image_id, "Labels": None,
                "ParentId": "", "RepoDigests": [digest], "RepoTags": refs, "SharedSize": -1,
                "Size": 2_000_000 + i, "VirtualSize": 2_000_000 + i})
        for i in range(0 if pulled else images):
            n_tags = tags_per_image if i < images - 1 else tags - tags_per_image * (images - 1)
            self.images.append({
                "Containers": -1, "Created": now - i * 3600, "Id": f"sha256:{_hex(i, 'img')}",
                "Labels": None, "ParentId": "",
                "RepoDigests": [f"registry.example.com/team/app{i}@sha256:{_hex(i, 'dig')}"],
                "RepoTags": [f"registry.example.com/team/app{i}:v{t}" for t in range(n_tags)],
                "SharedSize": -1, "Size": 50_000_000 + i, "VirtualSize": 50_000_000 + i})
        self.containers = []
        for c in range(containers):
            image = self.images[c % images]
            self.containers.append({
                "Id": _hex(c, "ctr"), "Names": [f"/svc-{c}"], "Image": image["RepoTags"][0],
                "ImageID": image["Id"], "Command": "/bin/app", "Created": now - c,
                "Ports": [], "Labels": {}, "State": "running" if c % 3 else "exited",
                "Status": "Up", "HostConfig": {"NetworkMode": "none"},
                "NetworkSettings": {"Networks": {}}, "Mounts": []})
        self.bodies = {
            "/images/json": json.dumps(self.images).encode(),
            "/containers/json": json.dumps(self.containers).encode(),
            "/system/df": json.dumps({
                "LayersSize": 50_000_000 * images,
                "Images": [{**i, "Containers": 1} for i in self.images],
                "Containers": [{**c, "SizeRw": 1000} for c in self.containers],
                "Volumes": [], "BuildCache": [], "BuilderSize": 0}).encode(),
            "/info": json.dumps({"RegistryConfig": {"InsecureRegistryCIDRs": ["127.0.0.0/8"],
                                                    "IndexConfigs": {}}}).encode(),
            "/version": json.dumps({"ApiVersion": "1.41", "MinAPIVersion": "1.12",
                                    "Version": "20.10.24", "Os": "linux",
                                    "Arch": "amd64"}).encode(),
        }
        self.inspect_image = json.dumps({"Metadata": {"LastTagTime":
                                                      "2026-11-01T00:00:00.000000000Z"}})
        engine = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def address_string(self) -> str:
                return "unix"

            def do_GET(self) -> None:
                path = self.path.partition("?")[0]
                if path.startswith("/v1."):
                    path = "/" + path.split("/", 2)[2]
                time.sleep(engine.delays.get(path, 0))
                if path == "/_ping":
                    body = b"OK"
                elif path == "/events":
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    self.wfile.flush()
                    while not engine.stopped.wait(1):
                        pass
                    return
                elif path in engine.bodies:
                    body = engine.bodies[path]
                elif path.startswith("/images/"):
                    body = engine.inspect_image.encode()
                elif path.startswith("/containers/"):
                    body = json.dumps({"Config": {"Image": "registry.example.com/x:1"}}).encode()
                else:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Api-Version", "1.41")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_HEAD = do_GET

        class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
            daemon_threads = True

        self.stopped = threading.Event()
        self.server = Server(str(socket_path), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def host(self) -> str:
        return f"unix://{self.socket_path}"

    def churn(self, stop: threading.Event, every: float = 1.0) -> None:
        """Until ``stop``, add or remove one tag of the first image every ``every`` seconds,
        so that every engine read sees a change."""
        original = self.bodies["/images/json"]
        images = json.loads(original)
        tags, extra = images[0]["RepoTags"], "registry.example.com/team/churn:x"
        while not stop.wait(every):
            if extra in tags:
                tags.remove(extra)
            else:
                tags.append(extra)
            self.bodies["/images/json"] = json.dumps(images).encode()
        self.bodies["/images/json"] = original

    def stop(self) -> None:
        self.stopped.set()
        self.server.shutdown()
        self.server.server_close()


@contextlib.contextmanager
def standin_process(socket_path: Path, tags: int, containers: int,
                    churn: bool = False) -> Iterator[str]:
    """A stand-in engine served by another Python process (its host URL), so that its work
    does not compete with the caller's timed requests for the interpreter lock. ``churn``:
    one tag added or removed every second (``StandInEngine.churn``)."""
    code = ("import sys, threading, time; sys.path.insert(0, sys.argv[1]); "
            "from bench.standin_engine import StandInEngine; from pathlib import Path; "
            "e = StandInEngine(Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])); "
            "print('up', flush=True); "
            "e.churn(threading.Event()) if sys.argv[5] == '1' else time.sleep(10**9)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(Path(__file__).parent.parent),
                             str(socket_path), str(tags), str(containers), str(int(churn))],
                            stdout=subprocess.PIPE, text=True)
    try:
        if proc.stdout is None or proc.stdout.readline().strip() != "up":
            raise RuntimeError(f"the stand-in engine did not start (exit {proc.poll()})")
        yield f"unix://{socket_path}"
    finally:
        proc.kill()
        proc.wait()
