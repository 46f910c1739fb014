"""The pages a person reads: the status page at ``/``, its JSON twin ``/status.json`` and the
configuration in force at ``/config``.

Rendered from the snapshots the collectors read (exporter.status), never by calling Docker
or a registry. Self-contained: no fonts, scripts or styles from elsewhere, since hosts are
often offline. Without JavaScript the page is complete; the one script only reloads it.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from exporter import __version__, status
from exporter.app import Exporter
from exporter.config import Config
from exporter.status import (
    DOCS_URL,
    NO_DATE,
    ContainerRow,
    ImageRow,
    Status,
    TagRow,
    ago,
    exact,
    human_size,
    iso,
    registry_reason,
    short_id,
)

T = TypeVar("T")
HTML = "text/html; charset=utf-8"
MAX_ROWS = 100  # rows per table on the page; /status.json has them all
REFRESH_SECONDS = 60


@dataclass(frozen=True)
class Page:
    code: int
    body: bytes
    content_type: str


def route(exporter: Exporter, path: str) -> Page | None:
    """The page served at ``path``, or None when there is none (the server answers 404)."""
    if path == "/":
        return Page(200, status_page(exporter).encode(), HTML)
    if path == "/status.json":
        return Page(200, status.dumps(status.from_exporter(exporter)).encode(),
                    "application/json")
    if path == "/config":
        return Page(200, config_page(exporter.config).encode(), HTML)
    return None


# -- pieces ----------------------------------------------------------------------------------

e = html.escape

CSS = """
:root{color-scheme:light dark;--bg:#fff;--fg:#1c1e21;--muted:#5d6570;--line:#e3e6ea;
--card:#f5f6f8;--link:#0a58b8;--bad:#a8241b;--bad-bg:#fde9e7;--warn:#8a5a00;--warn-bg:#fff2d1;
--ok:#17723a;--ok-bg:#e3f3e8;--bar:#d4d8de}
@media (prefers-color-scheme:dark){:root{--bg:#131518;--fg:#e5e7ea;--muted:#9aa2ac;
--line:#2b3037;--card:#1b1f24;--link:#8ab8ff;--bad:#ff9a90;--bad-bg:#3b1916;--warn:#f0c45a;
--warn-bg:#332810;--ok:#80dc9d;--ok-bg:#12301c;--bar:#3a4048}}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);
font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
main{max-width:1180px;margin:0 auto;padding:12px 16px 32px}
a{color:var(--link)}
h1{font-size:1.35em;margin:.4em 0 .1em}
h2{font-size:1.12em;margin:1.6em 0 .4em;padding-top:.4em;border-top:1px solid var(--line)}
h3{font-size:1em;margin:1.1em 0 .3em}
p{margin:.35em 0}
.muted,caption,.note{color:var(--muted)}
.note{font-size:.92em}
nav{display:flex;flex-wrap:wrap;gap:.3em 1.1em;margin:.3em 0 .8em;font-size:.95em}
code,.id{font:13px/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,"Liberation Mono",monospace}
td code{overflow-wrap:break-word}
.banner{border-radius:8px;padding:10px 12px;margin:.6em 0;background:var(--bad-bg);
color:var(--bad)}
.banner.warn{background:var(--warn-bg);color:var(--warn)}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(150px,1fr));gap:10px;
margin:.6em 0}
.card{display:block;background:var(--card);border-radius:8px;padding:10px 12px;
color:inherit;text-decoration:none;border-left:4px solid var(--line)}
.card:hover{outline:1px solid var(--line)}
.card .n{font-size:1.5em;font-weight:600;line-height:1.2}
.card .l{color:var(--muted);font-size:.9em}
.card.bad{border-left-color:var(--bad)}.card.warn{border-left-color:var(--warn)}
.card.ok{border-left-color:var(--ok)}
.wrap{overflow-x:auto}
table{border-collapse:collapse;width:100%;margin:.3em 0}
caption{text-align:left;font-size:.9em;padding:0 0 .3em}
th,td{text-align:left;padding:6px 8px;border-bottom:1px solid var(--line);vertical-align:top}
th{font-size:.85em;font-weight:600;color:var(--muted);white-space:nowrap}
.r{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.b{display:inline-block;padding:0 7px;border-radius:9px;font-size:.85em;font-weight:600;
white-space:nowrap;margin:0 .25em .15em 0}
.b.bad{background:var(--bad-bg);color:var(--bad)}.b.warn{background:var(--warn-bg);
color:var(--warn)}.b.ok{background:var(--ok-bg);color:var(--ok)}
.b.info{background:var(--card);color:var(--muted)}
.bar{display:inline-block;width:60px;height:6px;border-radius:3px;background:var(--bar);
vertical-align:middle;margin-left:6px;overflow:hidden}
.bar>span{display:block;height:100%;background:var(--warn)}
time{border-bottom:1px dotted var(--muted);cursor:help}
details{margin:.5em 0}summary{cursor:pointer;color:var(--link)}
footer{margin-top:2em;color:var(--muted);font-size:.88em}
@media (max-width:700px){
main{padding:8px 10px 24px}
table.stack,table.stack tbody{display:block}
table.stack thead{display:none}
table.stack tr{display:block;border-bottom:1px solid var(--line);padding:4px 0}
table.stack td{display:block;position:relative;border:0;padding:3px 2px 3px 36%;
text-align:left;white-space:normal;min-height:1.6em}
table.stack td::before{content:attr(data-label);position:absolute;left:2px;width:33%;
color:var(--muted);font-size:.85em;font-weight:600}
table.stack td code{overflow-wrap:anywhere}}
"""

# Inline, so the browser asks for no /favicon.ico.
ICON = ('<link rel="icon" href="data:image/svg+xml,%3Csvg xmlns=%27http://www.w3.org/2000/svg'
        '%27 viewBox=%270 0 16 16%27%3E%3Crect width=%2716%27 height=%2716%27 rx=%273%27 '
        'fill=%27%230a58b8%27/%3E%3Cpath d=%27M4 8.5l2.5 2.5L12 5.5%27 stroke=%27white%27 '
        'stroke-width=%272%27 fill=%27none%27/%3E%3C/svg%3E">')

SCRIPT = (f"<script>setInterval(function(){{if(!document.hidden&&"
          f"!document.querySelector('details[open]'))location.reload()}},"
          f"{REFRESH_SECONDS * 1000})</script>")


def when(t: float | None, now: float, empty: str = "—") -> str:
    """A relative age with the exact time on hover."""
    if t is None:
        return f'<span class="muted">{empty}</span>'
    return f'<time datetime="{iso(t)}" title="{exact(t)}">{e(ago(t, now))}</time>'


def ref(text: str) -> str:
    """An image reference or path that may wrap after a slash, never inside a name."""
    return f"<code>{e(text).replace('/', '/<wbr>')}</code>"


def _n(count: int, noun: str) -> str:
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def badge(text: str, kind: str) -> str:
    return f'<span class="b {kind}">{e(text)}</span>'


Cell = tuple[str, str]  # (html, css class)


def table(headers: Sequence[str], rows: Iterable[Sequence[str | Cell]],
          caption: str = "") -> str:
    """A table that turns into label/value blocks on a phone; numeric columns end in ' #'."""
    heads = [(h.removesuffix(" #"), "r" if h.endswith(" #") else "") for h in headers]
    out = ['<div class="wrap"><table class="stack">']
    if caption:
        out.append(f"<caption>{caption}</caption>")
    out.append("<thead><tr>" + "".join(
        f'<th class="{c}">{e(h)}</th>' if c else f"<th>{e(h)}</th>" for h, c in heads)
        + "</tr></thead><tbody>")
    for row in rows:
        cells = []
        for (label, numeric), cell in zip(heads, row, strict=True):
            text, cls = cell if isinstance(cell, tuple) else (cell, "")
            cls = " ".join(c for c in (cls, numeric) if c)
            attr = f' class="{cls}"' if cls else ""
            cells.append(f'<td data-label="{e(label)}"{attr}>{text}</td>')
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


def capped(rows: Sequence[T], what: str) -> tuple[Sequence[T], str]:
    if len(rows) <= MAX_ROWS:
        return rows, ""
    return rows[:MAX_ROWS], (f'<p class="note">{MAX_ROWS} of {len(rows):,} {what} shown; '
                             f'<a href="/status.json">/status.json</a> has them all.</p>')


def shell(title: str, body: str, refresh: bool = False) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width,initial-scale=1">'
            f"{ICON}"
            f"<title>{e(title)}</title><style>{CSS}</style></head>\n<body><main>\n{body}\n"
            f"</main>{SCRIPT if refresh else ''}</body></html>\n")


def nav(config: Config) -> str:
    links = [("/", "Status"), (config.web_telemetry_path, "Metrics"),
             ("/status.json", "Status as JSON"), ("/config", "Configuration"),
             ("/-/healthy", "Health"), ("/-/ready", "Readiness"), (DOCS_URL, "Docs")]
    return "<nav>" + "".join(f'<a href="{e(href)}">{e(text)}</a>' for href, text in links) \
        + "</nav>"


# -- the status page -------------------------------------------------------------------------


def status_page(exporter: Exporter) -> str:
    return render_status(status.from_exporter(exporter), nav(exporter.config))


def render_status(s: Status, navigation: str) -> str:
    now = s.generated
    api = f" (Engine API {e(s.engine_api)})" if s.engine_api else ""
    host = "Docker host"
    if s.engine not in ("docker", "podman"):  # a Kubernetes node, read through CRI
        host = "Kubernetes node, CRI endpoint"
        api = f" ({e(s.engine)} {e(s.engine_version)}, CRI {e(s.engine_api)})"
    parts = [
        "<h1>Docker hygiene</h1>",
        f'<p class="muted">{host} <code>{e(s.docker_host)}</code>{api} · '
        f"docker-hygiene-exporter {e(s.version)}</p>",
        navigation,
        _banners(s, now),
        _cards(s, now),
        *(f'<section id="{name}">{render(s, now)}</section>' for name, render in (
            ("containers", _containers), ("tags", _tags), ("disk", _disk),
            ("images", _images), ("pulls", _pulls), ("sources", _sources))),
        f'<footer>Generated {when(now, now)} from what the exporter last read; it reloads '
        f"every minute while no section is open. Nothing here calls Docker or a registry: "
        f'each section says how old its figures are. <a href="/status.json">/status.json</a> '
        f"has the same data for scripts.</footer>",
    ]
    return shell("Docker hygiene", "\n".join(p for p in parts if p), refresh=True)


def _banners(s: Status, now: float) -> str:
    engine = next((x for x in s.sources if x.name == "engine"), None)
    if engine is None or engine.state != "failing":
        return ""
    last = (f"The figures below are from the last successful read, {when(s.engine_as_of, now)}."
            if s.engine_as_of else "No read has succeeded yet, so there is nothing to show.")
    reason = engine.reason[:1].upper() + engine.reason[1:]
    if not reason.endswith(("?", "!", ".")):
        reason += "."
    return f'<div class="banner"><strong>{e(reason)}</strong> {last}</div>'


def _cards(s: Status, now: float) -> str:
    cards = []
    if s.disk is not None:
        kind = "warn" if s.disk.reclaimable_bytes > s.disk.size_bytes / 4 else "ok"
        cards.append(("#disk", kind, human_size(s.disk.reclaimable_bytes),
                      f"reclaimable of {human_size(s.disk.size_bytes)} used"))
    attention = s.attention
    drifted = sum(1 for c in attention if "drifted" in c.problems)
    kind = "bad" if drifted else ("warn" if attention else "ok")
    if s.engine_as_of is None:
        cards.append(("#containers", "", "—", "containers: not read yet"))
    else:
        cards.append(("#containers", kind, f"{len(attention)} of {len(s.containers)}",
                      "containers need attention"))
    if s.drift.as_of is not None or s.versions.as_of is not None:
        n_drift = sum(1 for t in s.tags if t.upstream == "drifted")
        n_newer = sum(1 for t in s.tags if t.newer_version)
        cards.append(("#tags", "bad" if n_drift else ("warn" if n_newer else "ok"),
                      f"{n_drift} drifted", f"{n_newer} with a newer version, of "
                                            f"{_n(len(s.tags), 'tag')}"))
    oldest = next((i for i in s.images if i.built is not None), None)  # dated ones first
    if oldest is not None:
        cards.append(("#images", "", ago(oldest.created, now).removesuffix(" ago"),
                      "age of the oldest image"))
    failing = s.failing
    cards.append(("#sources", "bad" if failing else "ok",
                  f"{len(failing)} failing" if failing else "all ok",
                  f"of {len(s.sources)} sources"))
    return '<div class="cards">' + "".join(
        f'<a class="card {k}" href="{h}"><div class="n">{e(n)}</div><div class="l">{e(lab)}'
        f"</div></a>" for h, k, n, lab in cards) + "</div>"


def _problems(c: ContainerRow, now: float) -> str:
    out = []
    if c.drifted:
        out.append(badge("drifted", "bad") + _since(c.drift_since, now))
    if c.stale:
        out.append(badge("stale", "warn") + _since(c.stale_since, now))
    if c.newer_version:
        behind = f" ({c.versions_behind} behind)" if c.versions_behind else ""
        version = "" if c.newer_version == "newer" else f" <code>{e(c.newer_version)}</code>"
        out.append(f'{badge("newer version", "warn")}{version}{behind}'
                   + _since(c.newer_since, now))
    return "<br>".join(out) or badge("ok", "ok")


def _since(t: float | None, now: float) -> str:
    """ " since 3 days ago", or nothing where the engine keeps no such time (a pull on
    Docker 20.10 records none)."""
    if t is None:
        return ""
    return f" {when(t, now)}" if abs(now - t) < 5 else f" since {when(t, now)}"


def _containers(s: Status, now: float) -> str:
    out = ['<h2>Containers</h2>',
           '<p class="note"><strong>Drifted</strong>: the registry serves other content for '
           "its tag now. <strong>Stale</strong>: its tag was pulled again here, the container "
           "was not recreated. <strong>Newer version</strong>: a newer version of its tag "
           "exists upstream. Worst first.</p>"]
    if s.engine_as_of is None and not s.containers:
        out.append('<p class="muted">Not read yet.</p>')
        return "\n".join(out)
    attention = s.attention
    rows, note = capped(attention, "containers")
    if attention:
        out.append(table(["Container", "State", "Image", "Problem, since when"], (
            [f"<strong>{e(c.name)}</strong>", e(c.state), ref(c.image),
             _problems(c, now)] for c in rows)))
        out.append(note)
    elif s.containers:
        out.append(f"<p>{badge('ok', 'ok')} None of the {_n(len(s.containers), 'container')} "
                   "runs a stale, drifted or outdated image.</p>")
    else:
        out.append('<p class="muted">No containers.</p>')
    fine = [c for c in s.containers if not c.problems]
    if fine and attention:
        shown, note = capped(fine, "containers")
        out.append(f"<details><summary>{_n(len(fine), 'container')} without problems</summary>"
                   + table(["Container", "State", "Image"], (
                       [e(c.name), e(c.state), ref(c.image)]
                       for c in shown)) + note + "</details>")
    out.append(f'<p class="note">Read from the engine {when(s.engine_as_of, now, "never")}.'
               "</p>")
    return "\n".join(out)


def _knowledge(s: Status, now: float) -> str:
    out = []
    for k, what in ((s.drift, "Drift"), (s.versions, "Newer versions")):
        if k.origin == "off":
            out.append(f"{what}: off.")
        elif k.as_of is None:
            out.append(f"{what}: not known yet.")
        else:
            detail = f" ({e(k.detail)})" if k.detail else ""
            out.append(f"{what}: updated {when(k.as_of, now)}{detail}.")
    return " " + " ".join(out)


def _upstream(t: TagRow, now: float) -> str:
    if t.upstream == "drifted":
        return badge("drifted", "bad") + _since(t.drift_since, now)
    if t.upstream == "unknown":
        if t.reason == "no_repo_digest":
            return f'{badge("local", "info")} {e(registry_reason(t.reason))}'
        return f'{badge("unknown", "warn")} {e(registry_reason(t.reason))}'
    if t.upstream == "platform_unchanged":
        return badge("current for this platform", "ok")
    if t.upstream == "current":
        return badge("current", "ok")
    return '<span class="muted">not checked</span>'


def _tags(s: Status, now: float) -> str:
    if s.drift.origin == "off" and s.versions.origin == "off":
        return ('<h2>Tags and their registries</h2><p class="muted">Upstream '
                "checks are off (upstream.mode off).</p>")
    out = ['<h2>Tags and their registries</h2>',
           '<p class="note">Each local tag that came from a registry, against what the '
           "registry serves now. Drifted first, then newer versions, then tags that could not "
           f"be checked.{_knowledge(s, now)}</p>"]
    attention = [t for t in s.tags if t.attention]
    if not s.tags:
        out.append('<p class="muted">No tag checked yet.</p>')
        return "\n".join(out)
    if attention:
        rows, note = capped(attention, "tags")
        out.append(table(["Tag", "Upstream", "Newer version", "Checked", "Containers"], (
            [ref(t.image), _upstream(t, now),
             (f"<code>{e(t.newer_version)}</code> ({t.versions_behind} behind)"
              + _since(t.newer_since, now) if t.newer_version else
              '<span class="muted">—</span>'),
             when(t.checked, now), e(", ".join(t.containers)) or '<span class="muted">—</span>']
            for t in rows)))
        out.append(note)
    rest = [t for t in s.tags if not t.attention]
    local = sum(1 for t in rest if t.reason == "no_repo_digest")
    if rest:
        builds = (f"; {_n(local, 'local build')} (no registry digest, nothing upstream to "
                  "compare)") if local else ""
        out.append(f"<p>{badge('ok', 'ok')} {_n(len(rest) - local, 'other tag')} current, "
                   f"with no newer version{builds}.</p>")
    return "\n".join(out)


def _disk(s: Status, now: float) -> str:
    out = ['<h2>Disk</h2>']
    if s.disk is None:
        out.append('<p class="muted">Not read yet (<code>/system/df</code> is slow on large '
                   "hosts; see the sources below).</p>")
        return "\n".join(out)
    d = s.disk

    def pct(part: int, whole: int) -> str:
        share = 100 * part / whole if whole else 0
        return (f"{human_size(part)} ({share:.0f}%)"
                f'<span class="bar"><span style="width:{share:.0f}%"></span></span>')

    out.append(table(["Kind", "Objects #", "In use #", "Size #", "Reclaimable #"], (
        [e(r.kind.replace("_", " ")), str(r.objects), str(r.active), human_size(r.size_bytes),
         pct(r.reclaimable_bytes, r.size_bytes)] for r in d.kinds),
        caption=(f"The image filesystem as CRI's ImageFsInfo reports it to the kubelet, read "
                 f"{when(d.as_of, now)}. {human_size(d.reclaimable_bytes)} is held by images "
                 "no container uses: what the kubelet's image garbage collection may delete."
                 if any(r.kind == "image_filesystem" for r in d.kinds) else
                 f"As <code>docker system df</code> reports it, read {when(d.as_of, now)}. "
                 f"{human_size(d.reclaimable_bytes)} of {human_size(d.size_bytes)} could be "
                 "reclaimed by pruning what nothing uses. Most reclaimable first.")))
    if d.volumes:
        unused = [v for v in d.volumes if v.containers == 0]
        rows, note = capped(d.volumes, "volumes")
        out.append(
            f"<details><summary>{_n(len(d.volumes), 'volume')}, {len(unused)} unused "
            f"({human_size(sum(v.size_bytes or 0 for v in unused))})</summary>"
            + table(["Volume", "Size #", "Containers #"], (
                [f"<code>{e(v.name)}</code>",
                 human_size(v.size_bytes) if v.size_bytes is not None else "—",
                 str(v.containers) if v.containers is not None else "—"]
                for v in rows)) + note + "</details>")
    return "\n".join(out)


def _built(i: ImageRow, now: float) -> str:
    """Its age, or for a reproducible build that it has no date (the placeholder on hover)."""
    if i.built is not None:
        return when(i.created, now)
    return (f'<span class="muted" title="created {e(exact(i.created))}: a placeholder, '
            f'not a build time">{e(NO_DATE)}</span>')


def _images(s: Status, now: float) -> str:
    out = ['<h2>Images, oldest first</h2>']
    if not s.images:
        out.append('<p class="muted">No images.</p>' if s.engine_as_of else
                   '<p class="muted">Not read yet.</p>')
        return "\n".join(out)
    dangling = [i for i in s.images if not i.tags]
    undated = sum(1 for i in s.images if i.built is None)
    rows, note = capped(s.images, "images")
    out.append(table(["Image", "ID", "Built", "Last tagged here", "Size #",
                      "Containers #"], (
        [ref(i.name), f'<span class="id">{e(short_id(i.id))}</span>',
         _built(i, now), when(i.last_tagged, now), human_size(i.size_bytes),
         str(i.containers)] for i in rows),
        caption=f"{len(s.images)} images; {len(dangling)} dangling (untagged) take "
                f"{human_size(sum(i.size_bytes for i in dangling))}. Sizes include layers "
                "shared with other images."
                + (f" Reproducible builds ({undated}, listed last) carry a placeholder "
                   "date from before Docker existed, not a build time." if undated else "")))
    out.append(note)
    return "\n".join(out)


def _pulls(s: Status, now: float) -> str:
    p = s.pulls
    out = ['<h2>Pulls</h2>']
    if p.host is None and p.hub is None and p.registry is None and p.harbor is None:
        out.append('<p class="muted">No pull source is on (events.enabled, hub, webhook, '
                   "harbor).</p>")
        return "\n".join(out)

    if p.host is not None:
        _section(out, f"On this host, since {when(p.host.since, now)}",
                 ["Repository", "Pulls #"], p.host.repositories,
                 lambda r: [ref(r.repository), f"{r.pulls:,}"],
                 "No pull seen since the exporter started.")
    if p.hub is not None:
        _section(out, "Docker Hub", ["Repository", "Pulls #", "Stars #", "Last pushed"], p.hub,
                 lambda r: [ref(r.repository), f"{r.pulls:,}",
                            f"{r.stars:,}", when(r.last_updated, now)],
                 "Not read yet.")
    if p.registry is not None:
        _section(out, "Registries (notifications)",
                 ["Registry", "Repository", "Pulls #", "Pushes #"], p.registry,
                 lambda r: [e(r.registry), ref(r.repository),
                            f"{r.pulls:,}", f"{r.pushes:,}"],
                 "No notification received since the exporter started.")
    if p.harbor is not None:
        _section(out, "Harbor", ["Registry", "Project", "Repository", "Pulls #"], p.harbor,
                 lambda r: [e(r.registry), e(r.project),
                            ref(r.repository), f"{r.pulls:,}"],
                 "Not read yet.")
    return "\n".join(out)


def _section(out: list[str], title: str, headers: list[str], rows: Sequence[T],
             row: Callable[[T], list[str]], empty: str) -> None:
    out.append(f"<h3>{title}</h3>")
    if not rows:
        out.append(f'<p class="muted">{empty}</p>')
        return
    shown, note = capped(rows, "repositories")
    out.append(table(headers, (row(r) for r in shown)) + note)


def _sources(s: Status, now: float) -> str:
    def state(x: status.SourceRow) -> str:
        return badge(x.state, {"failing": "bad", "starting": "warn"}.get(x.state, "ok"))

    def error(x: status.SourceRow) -> str:
        if not x.error:
            return '<span class="muted">—</span>'
        return f'<span title="{e(x.error)}">{e(x.reason or x.error)}</span>'

    return ('<h2>Sources</h2>' + table(
        ["Source", "State", "Last success", "Last error", "Took #"], (
            [f"<strong>{e(x.name)}</strong>", state(x), when(x.last_success, now, "never"),
             error(x), f"{x.duration_seconds * 1000:,.0f} ms" if x.state != "starting" else "—"]
            for x in s.sources),
        caption="Each source reads in the background on its own interval; failing ones first. "
                "Hover an error for the exact message."))


# -- the configuration page ------------------------------------------------------------------


def config_page(config: Config) -> str:
    rows = ([f"<code>{e(k)}</code>", f"<code>{e(v)}</code>" if v else
             '<span class="muted">—</span>'] for k, v in config.shown().items())
    body = ("<h1>Configuration in force</h1>"
            f'<p class="muted">docker-hygiene-exporter {e(__version__)}. Flags, environment and '
            "configuration file merged; secrets, and passwords in URLs, are masked.</p>"
            + nav(config) + table(["Setting", "Value"], rows))
    return shell("Configuration · Docker hygiene", body)
