"""``bundle --output DIR``: write out the alert rules, runbook and Grafana dashboards.

They ship inside the package (``exporter/assets``) so that a pip install has them; in the
repository, the top-level ``alerts/`` and ``dashboards/`` are symlinks to the same files.
Writing them out can replace the rules' job matcher and runbook location (in the rules and
the dashboards' links), the two things a deployment usually has to adapt.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterator
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

DEFAULT_JOB_MATCHER = 'job=~".*docker-hygiene.*"'
RUNBOOK_URL = ("https://github.com/docker-hygiene-exporter/docker-hygiene-exporter/blob/main/"
               "exporter/assets/alerts/runbook.md")
PARTS = ("alerts", "dashboards")
# promtool unit tests pin the default matcher and runbook URL: not for deployments.
SKIPPED_DIRS = frozenset({"tests", "__pycache__"})
_MATCHER = re.compile(r'^[a-zA-Z_][a-zA-Z0-9_]*\s*(=|!=|=~|!~)\s*"(?:[^"\\\n]|\\.)*"$')


def assets() -> Traversable:
    """The bundled files, wherever the package is installed (a wheel, a zip, a checkout)."""
    return resources.files("exporter") / "assets"


def files() -> Iterator[tuple[str, bytes]]:
    """(path relative to the output directory, content) of every bundled file, sorted."""

    def walk(node: Traversable, prefix: str) -> Iterator[tuple[str, bytes]]:
        for child in sorted(node.iterdir(), key=lambda c: c.name):
            rel = f"{prefix}/{child.name}"
            if child.is_dir():
                if child.name not in SKIPPED_DIRS:
                    yield from walk(child, rel)
            elif not child.name.startswith("."):
                yield rel, child.read_bytes()

    for part in PARTS:
        yield from walk(assets() / part, part)


def render(rel: str, data: bytes, job_matcher: str = DEFAULT_JOB_MATCHER,
           runbook_url: str = RUNBOOK_URL) -> bytes:
    """The file as written: rule files get the job matcher and runbook URL asked for, the
    dashboards' panel links to the runbook the same URL (they select jobs with a variable)."""
    if rel.startswith("dashboards/") and rel.endswith(".json"):
        if runbook_url == RUNBOOK_URL:
            return data
        url = json.dumps(runbook_url)[1:-1]  # as it reads inside a JSON string
        return data.decode("utf-8").replace(f'"{RUNBOOK_URL}#', f'"{url}#').encode("utf-8")
    if not (rel.startswith("alerts/") and rel.endswith(".rules.yml")):
        return data
    text = data.decode("utf-8").replace(DEFAULT_JOB_MATCHER, job_matcher)
    text = text.replace(f"runbook_url: {RUNBOOK_URL}#", f"runbook_url: {runbook_url}#")
    return text.encode("utf-8")


def write(output: Path, job_matcher: str = DEFAULT_JOB_MATCHER,
          runbook_url: str = RUNBOOK_URL) -> list[Path]:
    """Write every bundled file under ``output`` (overwriting), and return their paths."""
    written = []
    for rel, data in files():
        path = output / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(render(rel, data, job_matcher, runbook_url))
        written.append(path)
    return written


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bundle", help="write the Prometheus alert rules, runbook and Grafana dashboards to a "
                       "directory, then exit")
    p.add_argument("--output", "-o", required=True, metavar="DIR",
                   help="directory to write alerts/ and dashboards/ into (files are "
                        "overwritten)")
    p.add_argument("--job-matcher", default=DEFAULT_JOB_MATCHER, metavar="MATCHER",
                   help="label matcher that selects the exporter's scrape job in the rules, "
                        "e.g. 'job=\"docker\"' (default: %(default)s)")
    p.add_argument("--runbook-url", default=RUNBOOK_URL, metavar="URL",
                   help="where runbook.md is served, e.g. a copy on your wiki; each alert's "
                        "runbook_url, and the dashboards' links to it, is this plus "
                        "#<alert name in lower case>")


def run(args: argparse.Namespace) -> int:
    matcher = args.job_matcher.strip()
    if not _MATCHER.match(matcher):
        print(f"bundle: --job-matcher {args.job_matcher!r} is not one label matcher such as "
              "job=\"docker\" or job=~\"docker-.*\"", file=sys.stderr)
        return 2
    if not re.match(r"^https?://\S+$", args.runbook_url) or "#" in args.runbook_url:
        print(f"bundle: --runbook-url {args.runbook_url!r} is not an http(s) URL without a "
              "#fragment", file=sys.stderr)
        return 2
    try:
        written = write(Path(args.output), matcher, args.runbook_url)
    except OSError as exc:
        print(f"bundle: cannot write to {args.output}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    for path in written:
        print(path)
    return 0
