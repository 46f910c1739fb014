"""Container health check: exit 0 when the exporter answers /-/healthy, 1 otherwise.

Images need no curl for it. The address comes from DOCKER_HYGIENE_WEB_LISTEN_ADDRESS as the
exporter reads it; a wildcard host is asked on loopback. Plain HTTP is tried first, then TLS
(for a --web.config.file with tls_server_config; the certificate is not checked, this only
asks whether the process serves). /-/healthy needs no basic auth.
"""

import os
import ssl
import sys
import urllib.request

host, _, port = os.environ.get("DOCKER_HYGIENE_WEB_LISTEN_ADDRESS", ":10221").rpartition(":")
if host in ("", "0.0.0.0", "[::]"):
    host = "127.0.0.1"
error: Exception | None = None
for scheme, context in (("http", None), ("https", ssl._create_unverified_context())):
    try:
        with urllib.request.urlopen(f"{scheme}://{host}:{port}/-/healthy", timeout=4,
                                    context=context) as response:
            if response.status == 200:
                sys.exit(0)
    except Exception as exc:  # any failure: try the next scheme, then report unhealthy
        error = exc
print(f"unhealthy: {host}:{port}/-/healthy: {error}", file=sys.stderr)
sys.exit(1)
