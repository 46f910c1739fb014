"""Access control: exporter-toolkit web config (TLS, client certificates, basic auth,
headers, reload) and limits on what a client may send."""

from __future__ import annotations

import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import bcrypt
import httpx
import pytest

from tests.services import Dockerd, wait_for
from tests.tls import make_pki

PASSWORD = "scrape-me"


def _hash(password: str) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=6)).decode()


def _start(exporter_factory, dockerd: Dockerd, web: Path, *extra: str):
    exp = exporter_factory("--docker.host", dockerd.host, "--web.config.file", str(web),
                           "--upstream.mode", "off", *extra, wait_ready=False)
    wait_for(lambda: exp._alive() and "listening on" in exp.log(), 20, "the exporter")
    return exp


def test_tls_with_client_certificates(tmp_path: Path, dockerd: Dockerd,
                                      exporter_factory) -> None:
    pki = make_pki(tmp_path / "pki")
    web = tmp_path / "web.yml"
    web.write_text("tls_server_config:\n  cert_file: pki/server.crt\n  key_file: pki/server.key\n"
                   "  client_auth_type: RequireAndVerifyClientCert\n"
                   "  client_ca_file: pki/ca.crt\n  min_version: TLS12\n")
    exp = _start(exporter_factory, dockerd, web)
    url = f"https://127.0.0.1:{exp.port}"
    ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    ctx.load_cert_chain(pki / "client.crt", pki / "client.key")
    good = httpx.Client(verify=ctx)
    wait_for(lambda: good.get(url + "/-/ready").status_code == 200, 20, "ready over TLS")
    assert "docker_up 1.0" in good.get(url + "/metrics").text
    # No client certificate: the handshake is refused.
    no_cert = httpx.Client(verify=ssl.create_default_context(cafile=str(pki / "ca.crt")))
    with pytest.raises(httpx.HTTPError):
        no_cert.get(url + "/metrics")
    # Plain HTTP to a TLS port gets nothing useful.
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{exp.port}/metrics")
    # A client certificate from another CA is refused too.
    other = make_pki(tmp_path / "other", "someone-else")
    ctx2 = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    ctx2.load_cert_chain(other / "client.crt", other / "client.key")
    with pytest.raises(httpx.HTTPError):
        httpx.Client(verify=ctx2).get(url + "/metrics")
    assert exp.proc.poll() is None


def test_basic_auth_headers_and_reload(tmp_path: Path, dockerd: Dockerd,
                                       exporter_factory) -> None:
    web = tmp_path / "web.yml"
    web.write_text(f"basic_auth_users:\n  prometheus: '{_hash(PASSWORD)}'\n"
                   "http_server_config:\n  headers:\n    X-Frame-Options: deny\n")
    cfg = tmp_path / "exporter.yml"
    cfg.write_text('webhook:\n  distribution:\n    secret: "Basic '
                   + __import__("base64").b64encode(f"prometheus:{PASSWORD}".encode()).decode()
                   + '"\n')
    exp = _start(exporter_factory, dockerd, web, "--config.file", str(cfg))
    wait_for(lambda: httpx.get(exp.url + "/-/healthy").status_code == 200, 20, "healthy")
    denied = httpx.get(exp.url + "/metrics")
    assert denied.status_code == 401
    assert denied.headers["www-authenticate"] == 'Basic realm="docker-hygiene-exporter"'
    assert httpx.get(exp.url + "/metrics", auth=("prometheus", "wrong")).status_code == 401
    assert httpx.get(exp.url + "/metrics", auth=("nobody", PASSWORD)).status_code == 401
    assert httpx.get(exp.url + "/", auth=("prometheus", "wrong")).status_code == 401
    ok = httpx.get(exp.url + "/metrics", auth=("prometheus", PASSWORD))
    assert ok.status_code == 200 and ok.headers["x-frame-options"] == "deny"
    # The webhook obeys it too.
    hook = f"{exp.url}/webhooks/distribution"
    body = b'{"events": []}'
    ctype = {"Content-Type": "application/vnd.docker.distribution.events.v1+json"}
    assert httpx.post(hook, content=body, headers=ctype).status_code == 401
    assert httpx.post(hook, content=body, headers=ctype,
                      auth=("prometheus", PASSWORD)).status_code == 200

    # Rotating the password needs no restart; a broken file keeps the last good one.
    time.sleep(1.1)  # a new mtime
    web.write_text(f"basic_auth_users:\n  prometheus: '{_hash('rotated')}'\n")
    wait_for(lambda: httpx.get(exp.url + "/metrics", auth=("prometheus", "rotated"))
             .status_code == 200, 10, "the new password")
    assert httpx.get(exp.url + "/metrics", auth=("prometheus", PASSWORD)).status_code == 401
    time.sleep(1.1)
    web.write_text("basic_auth_users: [not, a, mapping]\n")
    for _ in range(3):
        assert httpx.get(exp.url + "/metrics", auth=("prometheus", "rotated")).status_code == 200
    assert exp.log().count("not reloaded, keeping the last good one") == 1
    assert "rotated" not in exp.log()


@pytest.mark.parametrize(("doc", "message"), [
    ("tls_server_config:\n  cert_file: /nonexistent.crt\n  key_file: /nonexistent.key\n",
     "web.config.file: tls_server_config.cert_file: cannot read /nonexistent.crt"),
    ("basic_auth_user:\n  a: b\n", "web.config.file: basic_auth_user: unknown key"),
    ("basic_auth_users:\n  a: plaintext\n",
     "web.config.file: basic_auth_users.a: must be a bcrypt hash"),
    ("tls_server_config:\n  cipher_suites: [TLS_AES_128_GCM_SHA256]\n",
     "tls_server_config.cipher_suites: not supported"),
])
def test_bad_web_config_is_a_startup_error(tmp_path: Path, doc: str, message: str) -> None:
    web = tmp_path / "web.yml"
    web.write_text(doc)
    out = subprocess.run([sys.executable, "-m", "exporter", "--web.config.file", str(web)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2
    assert message in out.stderr, out.stderr


def test_slow_clients_time_out_and_do_not_block_others(dockerd: Dockerd,
                                                       exporter_factory) -> None:
    exp = exporter_factory("--docker.host", dockerd.host, "--upstream.mode", "off")
    slow = socket.create_connection(("127.0.0.1", exp.port))
    slow.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # never finishes its headers
    started = time.monotonic()
    for _ in range(5):
        assert httpx.get(exp.url + "/metrics").status_code == 200
    slow.settimeout(20)
    assert slow.recv(1024) == b""  # closed by the server
    assert 9 <= time.monotonic() - started <= 15
    slow.close()
    huge = httpx.get(exp.url + "/" + "a" * 10000)
    assert huge.status_code == 414
    many = httpx.get(exp.url + "/metrics", headers={f"X-H{i}": "v" for i in range(150)})
    assert many.status_code == 431
