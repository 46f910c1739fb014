"""The pages a person reads: rendered from the snapshots the collectors read, never by
calling Docker or a registry."""

from __future__ import annotations

import html
from dataclasses import dataclass

from exporter import __version__
from exporter.app import Exporter


@dataclass(frozen=True)
class Page:
    code: int
    body: bytes
    content_type: str


def route(exporter: Exporter, path: str) -> Page | None:
    """The page served at ``path``, or None when there is none (the server answers 404)."""
    if path == "/":
        return Page(200, landing_page(exporter).encode(), "text/html; charset=utf-8")
    return None


def landing_page(exporter: Exporter) -> str:
    config = exporter.config
    path = html.escape(config.web_telemetry_path)
    rows = "\n".join(
        f"<tr><td><code>{html.escape(k)}</code></td><td><code>{html.escape(v)}</code></td></tr>"
        for k, v in config.shown().items()
    )
    sources = "\n".join(
        f"<tr><td>{html.escape(s.name)}</td><td>{'ok' if s.status.success else 'failing'}"
        f"</td></tr>" for s in exporter.sources
    )
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Docker Hygiene Exporter</title></head>
<body>
<h1>Docker Hygiene Exporter</h1>
<p>Version {html.escape(__version__)}</p>
<ul>
<li><a href="{path}">Metrics</a></li>
<li><a href="/-/healthy">Health</a> and <a href="/-/ready">readiness</a></li>
</ul>
<h2>Sources</h2>
<table>{sources}</table>
<h2>Configuration in force</h2>
<table>{rows}</table>
</body></html>
"""
