"""The HTTP server under hostile or careless clients, with the exporter run as a process: a
deadline on each whole request, a cap on header bytes, a connection cap from the file limit,
bursts, clients that go away, basic-auth timing, and SIGTERM.

The engine does not matter here, so most exporters point at a socket that does not exist.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import os
import re
import resource
import selectors
import signal
import socket
import ssl
import statistics
import threading
import time
from pathlib import Path

import bcrypt
import httpx

from exporter.web.server import REQUEST_TIMEOUT, WORKERS
from tests.services import ExporterProcess, wait_for
from tests.tls import make_pki

NO_ENGINE = ("--docker.host", "unix:///nonexistent/docker.sock", "--upstream.mode", "off")
# Never finished: 10 s at a byte a second does not even end the request line.
SLOW_REQUEST = b"GET /metrics HTTP/1.1\r\nHost: slow\r\nX-Slow: " + b"a" * 200


def _threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def _rss_kb(pid: int) -> int:
    return next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text()
                .splitlines() if line.startswith("VmRSS:"))


def _raise_own_file_limit(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        assert hard >= need, f"the test needs {need} descriptors; the hard limit is {hard}"
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Trickle:
    """``count`` clients that each send a request one byte a second and never finish it.
    ``cut`` gets, per client the server closed or reset, the seconds from its connect."""

    def __init__(self, port: int, count: int, payload: bytes = SLOW_REQUEST) -> None:
        self.port = port
        self.count = count
        self.payload = payload
        self.cut: list[float] = []
        self.connected = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="trickle", daemon=True)
        self.error: Exception | None = None

    def __enter__(self) -> Trickle:
        self._thread.start()
        if not self.connected.wait(30):
            raise TimeoutError(f"{self.count} slow clients did not connect: {self.error!r}")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    @property
    def open(self) -> int:
        return self.count - len(self.cut)

    def _run(self) -> None:
        sel = selectors.DefaultSelector()
        try:
            for _ in range(self.count):
                sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
                sock.setblocking(False)
                sel.register(sock, selectors.EVENT_READ, [time.monotonic(), 0])
        except OSError as exc:
            self.error = exc
            return
        self.connected.set()
        tick = time.monotonic()
        while not self._stop.is_set() and sel.get_map():
            if time.monotonic() >= tick:
                for key in list(sel.get_map().values()):
                    state = key.data
                    try:
                        state[1] += key.fileobj.send(self.payload[state[1]:state[1] + 1])
                    except BlockingIOError:
                        pass
                    except OSError:
                        self._closed(sel, key)
                tick += 1
            for key, _ in sel.select(max(0.0, min(0.05, tick - time.monotonic()))):
                if key.fd not in sel.get_map():
                    continue
                try:
                    data = key.fileobj.recv(4096)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    self._closed(sel, key)
        for key in list(sel.get_map().values()):
            key.fileobj.close()

    def _closed(self, sel: selectors.BaseSelector, key: selectors.SelectorKey) -> None:
        self.cut.append(time.monotonic() - key.data[0])
        sel.unregister(key.fileobj)
        key.fileobj.close()


def _scrape_seconds(url: str) -> float:
    started = time.monotonic()
    r = httpx.get(url + "/metrics", timeout=10)
    assert r.status_code == 200 and "docker_up 0.0" in r.text
    return time.monotonic() - started


def test_slow_clients_are_cut_off_at_the_deadline_and_scrapes_go_on(exporter_factory) -> None:
    exp = exporter_factory(*NO_ENGINE)
    pid = exp.proc.pid
    _scrape_seconds(exp.url)
    threads_before = _threads(pid)
    scrapes: list[float] = []
    threads: list[int] = []
    with Trickle(exp.port, 200) as slow:
        end = time.monotonic() + REQUEST_TIMEOUT + 3
        while time.monotonic() < end and slow.open:
            scrapes.append(_scrape_seconds(exp.url))
            threads.append(_threads(pid))
            time.sleep(0.2)
    cut = sorted(slow.cut) or [0.0]
    print(f"scrapes: {len(scrapes)}, slowest {max(scrapes):.3f} s; slow clients cut off: "
          f"{len(cut)}, first {cut[0]:.2f} s, median {statistics.median(cut):.2f} s, "
          f"last {cut[-1]:.2f} s; threads {threads_before} -> max {max(threads)}")
    assert max(scrapes) < 1.0, scrapes
    near_deadline = [c for c in cut if REQUEST_TIMEOUT - 0.5 <= c <= REQUEST_TIMEOUT + 2]
    assert len(near_deadline) >= 0.9 * 200, cut
    assert max(threads) <= threads_before + WORKERS, (threads_before, threads)


def _client_hello() -> bytes:
    """The first flight of a real TLS handshake."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    tls = ctx.wrap_bio(ssl.MemoryBIO(), outgoing := ssl.MemoryBIO(), server_hostname="x")
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def test_tls_handshakes_share_the_deadline_and_certificates_rotate(
        tmp_path: Path, exporter_factory) -> None:
    """A TLS ClientHello sent a byte a second is cut off at the same deadline; TLS scrapes
    go on meanwhile; a new certificate in the web config serves the next connection."""
    pki, rotated = make_pki(tmp_path / "pki"), make_pki(tmp_path / "rotated", "rotated-ca")
    web = tmp_path / "web.yml"
    web.write_text("tls_server_config:\n  cert_file: pki/server.crt\n"
                   "  key_file: pki/server.key\n")
    exp = exporter_factory(*NO_ENGINE, "--web.config.file", str(web), wait_ready=False)
    wait_for(lambda: exp._alive() and "listening on" in exp.log(), 20, "the exporter")
    url = f"https://127.0.0.1:{exp.port}/metrics"

    def scrape(ca: Path) -> float:
        started = time.monotonic()
        r = httpx.get(url, verify=ssl.create_default_context(cafile=str(ca)), timeout=10)
        assert r.status_code == 200 and "docker_up 0.0" in r.text
        return time.monotonic() - started

    scrapes = []
    with Trickle(exp.port, 20, _client_hello()) as slow:
        while slow.open and len(scrapes) < 100:
            scrapes.append(scrape(pki / "ca.crt"))
            time.sleep(0.2)
    cut = sorted(slow.cut)
    assert len(cut) == 20, f"{len(cut)} of 20 slow handshakes cut off: {cut}"
    print(f"TLS: slowest scrape {max(scrapes):.3f} s; handshakes cut off at "
          f"{cut[0]:.2f}..{cut[-1]:.2f} s")
    assert max(scrapes) < 1.0, scrapes
    assert all(REQUEST_TIMEOUT - 0.5 <= c <= REQUEST_TIMEOUT + 2 for c in cut), cut

    web.write_text("tls_server_config:\n  cert_file: rotated/server.crt\n"
                   "  key_file: rotated/server.key\n")
    wait_for(lambda: scrape(rotated / "ca.crt"), 10, "the rotated certificate")
    try:
        scrape(pki / "ca.crt")
        raise AssertionError("the old certificate is still served")
    except httpx.ConnectError:
        pass


def test_webhook_over_tls_with_expect_continue(tmp_path: Path, exporter_factory) -> None:
    """Bodies are read in full through the TLS layer's small read buffer, on a kept-alive
    connection; one over 1 MiB is refused with a 413 the client gets to read."""
    pki = make_pki(tmp_path / "pki")
    web = tmp_path / "web.yml"
    web.write_text("tls_server_config:\n  cert_file: pki/server.crt\n"
                   "  key_file: pki/server.key\n")
    cfg = tmp_path / "exporter.yml"
    cfg.write_text('webhook:\n  distribution:\n    secret: "s3cret"\n')
    exp = exporter_factory(*NO_ENGINE, "--web.config.file", str(web), "--config.file",
                           str(cfg), wait_ready=False)
    wait_for(lambda: exp._alive() and "listening on" in exp.log(), 20, "the exporter")
    url = f"https://127.0.0.1:{exp.port}"
    events = {"events": [
        {"id": f"event-{i}", "action": "pull",
         "target": {"mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "repository": f"team/app-{i % 10}"},
         "request": {"method": "GET", "host": "registry.test:5000"}} for i in range(3000)]}
    body = json.dumps(events).encode()
    assert 500_000 < len(body) < 1024 * 1024
    headers = {"Authorization": "s3cret", "Content-Type": "application/json"}
    with httpx.Client(verify=ssl.create_default_context(cafile=str(pki / "ca.crt"))) as client:
        r = client.post(url + "/webhooks/distribution", content=body,
                        headers={**headers, "Expect": "100-continue"})
        assert (r.status_code, r.text) == (200, "ok\n")
        text = client.get(url + "/metrics").text
        assert 'docker_registry_pulls_total{registry="registry.test:5000",' \
               'repository="team/app-0"} 300.0' in text
        r = client.post(url + "/webhooks/distribution", content=b"x" * 2_000_000,
                        headers=headers)
        assert r.status_code == 413


def test_a_burst_of_scrapes_is_answered_in_full(exporter_factory) -> None:
    exp = exporter_factory(*NO_ENGINE)

    async def scrape() -> tuple[int, bool]:
        reader, writer = await asyncio.open_connection("127.0.0.1", exp.port)
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: burst\r\nConnection: close\r\n\r\n")
        data = await reader.read()
        writer.close()
        head, _, body = data.partition(b"\r\n\r\n")
        length = re.search(rb"(?im)^content-length: *(\d+)", head)
        return int(head.split()[1]), bool(length) and int(length[1]) == len(body) and \
            b"docker_up 0.0" in body

    async def burst() -> list[tuple[int, bool]]:
        return await asyncio.gather(*(scrape() for _ in range(200)))

    started = time.monotonic()
    answers = asyncio.run(burst())
    took = time.monotonic() - started
    print(f"200 concurrent scrapes answered in {took:.2f} s")
    assert answers == [(200, True)] * 200
    assert took < 5.0


def _huge_headers(port: int) -> bytes:
    """100 header lines of 64 KB, never ended; what the server answered (b"" when it closed
    or reset the connection)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        try:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: huge\r\n")
            for i in range(100):
                sock.sendall(b"X-Huge-%d: %s\r\n" % (i, b"a" * 64_000))
        except TimeoutError:
            return b"still reading after 10 s"
        except OSError:
            pass  # reset: refused
        try:
            return sock.recv(64)
        except TimeoutError:
            return b"no answer after 10 s"
        except OSError:
            return b""


def test_huge_headers_are_refused_without_buffering_them(exporter_factory) -> None:
    exp = exporter_factory(*NO_ENGINE)
    pid = exp.proc.pid
    for _ in range(3):  # warm-up: first-use allocations are not growth
        _scrape_seconds(exp.url)
        _huge_headers(exp.port)
    time.sleep(0.5)
    before = peak = _rss_kb(pid)
    with concurrent.futures.ThreadPoolExecutor(60) as pool:
        running = [pool.submit(_huge_headers, exp.port) for _ in range(60)]
        while not all(f.done() for f in running):
            peak = max(peak, _rss_kb(pid))
            time.sleep(0.01)
        answers = [f.result() for f in running]
    time.sleep(1)
    after = _rss_kb(pid)
    refused = [a for a in answers if a == b"" or re.match(rb"HTTP/1.[01] 431 ", a)]
    print(f"RSS {before} kB, peak {peak} kB, after {after} kB; {answers.count(b'')} reset, "
          f"{len(refused) - answers.count(b'')} answered 431")
    assert len(refused) == 60, answers
    assert peak - before < 4 * 1024, (before, peak)
    assert after - before < 4 * 1024, (before, after)
    _scrape_seconds(exp.url)


def test_scrapes_answer_with_the_file_limit_held_by_slow_clients(tmp_path: Path) -> None:
    """1,024 descriptors, as the systemd unit gives; ~1,017 slow clients."""
    _raise_own_file_limit(4096)
    exp = ExporterProcess([*NO_ENGINE, "--hub.enabled", "false"], tmp_path / "exporter.log",
                          prefix=["prlimit", "--nofile=1024:1024", "--"])
    exp.start()
    try:
        limits = Path(f"/proc/{exp.proc.pid}/limits").read_text()
        assert re.search(r"Max open files\s+1024\s+1024", limits), limits
        scrapes: list[float] = []
        with Trickle(exp.port, 1017) as slow:
            end = time.monotonic() + REQUEST_TIMEOUT - 3
            while time.monotonic() < end:
                scrapes.append(_scrape_seconds(exp.url))
                time.sleep(0.2)
            still_open = slow.open
        print(f"{len(scrapes)} scrapes, slowest {max(scrapes):.3f} s; {still_open} of 1017 "
              f"slow clients still connected at the end")
        assert max(scrapes) < 1.0, scrapes
        assert still_open > 800  # they really held the descriptors
        assert exp.proc.poll() is None
        assert "cannot accept" not in exp.log()
    finally:
        exp.stop()


def test_a_client_that_goes_away_is_one_log_line(exporter_factory, tmp_path: Path) -> None:
    """Before the answer (a Prometheus scrape timeout: a slow scrape, given up after 0.5 s)
    and during it (the client closes with the answer unread): one line each, no traceback.
    A client that never sent a request, or only half of one, is not worth a line."""
    engine = tmp_path / "hung.sock"  # accepts connections, never answers: scrapes take 2 s
    hung = socket.socket(socket.AF_UNIX)
    hung.bind(str(engine))
    hung.listen(128)
    try:
        # Not the readiness probe of the harness: given up while the engine hangs at start,
        # each probe would be a line too.
        exp = exporter_factory("--docker.host", f"unix://{engine}", "--upstream.mode", "off",
                               "--collector.on-scrape", "true", "--docker.timeout", "1s",
                               "--collector.disk.timeout", "1s", wait_ready=False)
        wait_for(lambda: exp._alive() and "listening on" in exp.log(), 20, "the exporter")
        for payload in (b"", b"GET /metrics HTTP/1.1\r\nHo"):
            with socket.create_connection(("127.0.0.1", exp.port)) as sock:
                sock.sendall(payload)
        with socket.create_connection(("127.0.0.1", exp.port)) as sock:
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            time.sleep(0.5)
        wait_for(lambda: "went away" in exp.log(), 15, "the line for the scrape given up")

        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
            sock.connect(("127.0.0.1", exp.port))
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock.recv(10).startswith(b"HTTP/1.1")
        wait_for(lambda: exp.log().count("went away") == 2, 10, "the line for the unread answer")
        time.sleep(1)
        log = exp.log()
        gone = [line for line in log.splitlines() if "went away" in line]
        print("\n".join(gone))
        assert len(gone) == 2, log
        assert [line for line in log.splitlines() if "logger=exporter.web" in line] == gone
        assert "went away before the response to GET /metrics" in gone[0]
        assert "went away during the response to GET /" in gone[1]
        assert "Traceback" not in log and all(line.startswith("ts=")
                                              for line in log.splitlines()), log
    finally:
        hung.close()


def test_unknown_users_cost_a_bcrypt_run_too(tmp_path: Path, exporter_factory) -> None:
    web = tmp_path / "web.yml"
    hashed = bcrypt.hashpw(b"right", bcrypt.gensalt(rounds=11)).decode()
    web.write_text(f"basic_auth_users:\n  prometheus: '{hashed}'\n")
    exp = exporter_factory(*NO_ENGINE, "--web.config.file", str(web), wait_ready=False)
    wait_for(lambda: exp._alive() and "listening on" in exp.log(), 20, "the exporter")

    def seconds(user: str) -> float:
        started = time.monotonic()
        r = httpx.get(exp.url + "/metrics", auth=(user, "wrong"), timeout=10)
        assert r.status_code == 401
        return time.monotonic() - started

    seconds("warm-up")
    known, unknown = [], []
    for _ in range(8):
        known.append(seconds("prometheus"))
        unknown.append(seconds("nobody"))
    k, u = statistics.median(known), statistics.median(unknown)
    print(f"median 401: known user {k * 1000:.0f} ms, unknown user {u * 1000:.0f} ms")
    assert k > 0.03  # bcrypt ran
    assert 0.6 * k < u < 1.6 * k, (known, unknown)


def test_sigterm_exits_within_a_second(exporter_factory) -> None:
    """The default configuration, an engine that is down, a slow client connected; signalled
    at a few moments (the sources between retries)."""
    for wait in (0.5, 2.0, 4.0):
        exp = exporter_factory("--docker.host", "unix:///nonexistent/docker.sock")
        with socket.create_connection(("127.0.0.1", exp.port)) as slow:
            slow.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            time.sleep(wait)
            started = time.monotonic()
            os.killpg(exp.proc.pid, signal.SIGTERM)
            with contextlib.suppress(Exception):
                exp.proc.wait(10)
            took = time.monotonic() - started
        print(f"exited {took:.2f} s after SIGTERM")
        assert exp.proc.returncode == 0
        assert took < 1.0
        assert "stopped" in exp.log()
