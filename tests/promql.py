"""Just enough PromQL reading for the bundle's tests: the vector selectors of an expression,
their matchers and range durations, and the dashboards' queries with Grafana's variables.

Not a parser: Prometheus itself (promtool, the HTTP API) checks that expressions parse. This
finds which metric each selector names and how it is filtered, which promtool does not say.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ALERTS = ROOT / "exporter" / "assets" / "alerts"
DASHBOARDS = ROOT / "exporter" / "assets" / "dashboards"

KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
            "group_left", "group_right", "inf", "nan", "atan2"}
GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}
AGGREGATIONS = {"sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk",
                "quantile", "count_values", "group"}
_IDENT = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_MATCHER = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*,?')


@dataclass(frozen=True)
class Selector:
    name: str  # "" for a selector of the form {__name__=~"..."}
    matchers: dict[str, tuple[str, str]]  # label -> (operator, value)


def _string_end(expr: str, i: int) -> int:
    """Index after the string literal that starts at ``expr[i]``."""
    quote = expr[i]
    j = i + 1
    while j < len(expr):
        if expr[j] == "\\" and quote != "`":
            j += 2
            continue
        if expr[j] == quote:
            return j + 1
        j += 1
    raise ValueError(f"unterminated string in {expr!r}")


def _braces(expr: str, i: int) -> tuple[str, int]:
    """The text inside the braces that open at ``expr[i]``, and the index after them."""
    j = i + 1
    while j < len(expr) and expr[j] != "}":
        j = _string_end(expr, j) if expr[j] in "\"'`" else j + 1
    if j >= len(expr):
        raise ValueError(f"unclosed {{ in {expr!r}")
    return expr[i + 1:j], j + 1


def matchers(text: str) -> dict[str, tuple[str, str]]:
    out = {}
    pos = 0
    while pos < len(text.strip()):
        m = _MATCHER.match(text, pos)
        if m is None:
            raise ValueError(f"cannot read matchers {text!r} at {pos}")
        out[m.group(1)] = (m.group(2), m.group(3))
        pos = m.end()
    return out


def scan(expr: str) -> tuple[list[Selector], list[str]]:
    """The vector selectors of ``expr`` and the contents of its ``[...]`` ranges."""
    selectors: list[Selector] = []
    ranges: list[str] = []
    i = 0
    while i < len(expr):
        c = expr[i]
        if c in "\"'`":
            i = _string_end(expr, i)
        elif c == "[":
            end = expr.index("]", i)
            ranges.append(expr[i + 1:end])
            i = end + 1
        elif c == "{":
            text, i = _braces(expr, i)
            selectors.append(Selector("", matchers(text)))
        elif c.isdigit() or (c == "." and i + 1 < len(expr) and expr[i + 1].isdigit()):
            m = re.compile(r"[0-9a-zA-Z_.]+").match(expr, i)
            assert m is not None
            i = m.end()
        elif _IDENT.match(expr, i):
            m = _IDENT.match(expr, i)
            assert m is not None
            word, i = m.group(0), m.end()
            j = i
            while j < len(expr) and expr[j].isspace():
                j += 1
            nxt = expr[j] if j < len(expr) else ""
            if word in GROUPING:
                if nxt == "(":  # a label list, not an expression
                    i = expr.index(")", j) + 1
            elif word in KEYWORDS or word in AGGREGATIONS or nxt == "(":
                pass  # an operator, an aggregation (maybe followed by `by`), a function
            elif nxt == "{":
                text, i = _braces(expr, j)
                selectors.append(Selector(word, matchers(text)))
            else:
                selectors.append(Selector(word, {}))
        else:
            i += 1
    return selectors, ranges


def _groups(expr: str) -> Iterator[tuple[int, int]]:
    """(start, end) of each top-level parenthesised group of ``expr``, parentheses included;
    strings are skipped."""
    depth, start, i = 0, 0, 0
    while i < len(expr):
        c = expr[i]
        if c in "\"'`":
            i = _string_end(expr, i)
            continue
        if c == "(":
            if depth == 0:
                start = i
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                yield start, i + 1
        i += 1


def _operands(expr: str) -> list[tuple[str, str]]:
    """``expr`` split at its top-level set operators: (operator before, operand), the first
    with operator "". ``and``/``unless`` bind tighter than ``or``, all to the left, so an
    operand after ``and``/``unless`` only filters the one before it."""
    cuts = []
    outside = list(expr)
    for start, end in _groups(expr):
        outside[start:end] = " " * (end - start)
    text = "".join(outside)
    i = 0
    while i < len(text):  # strings outside parentheses are selectors' matchers: skip them
        if text[i] in "\"'`":
            i = _string_end(text, i)
        elif text[i] == "{":
            i = _braces(text, i)[1]
        else:
            m = re.compile(r"(?<![a-zA-Z0-9_:])(and|or|unless)(?![a-zA-Z0-9_:])").match(text, i)
            if m:
                cuts.append((m.start(), m.end(), m.group(1)))
                i = m.end()
            else:
                i += 1
    out, pos, op = [], 0, ""
    for start, end, word in cuts:
        out.append((op, expr[pos:start]))
        pos, op = end, word
    out.append((op, expr[pos:]))
    return out


def value_selectors(expr: str) -> list[Selector]:
    """The selectors whose values make up ``expr``'s value: not the right operands of
    ``and`` and ``unless``, which only filter (e.g. ``... and on (container)
    docker_container_info{state="running"}``); label lists of ``by``, ``on`` and the like are
    not selectors either."""
    out: list[Selector] = []
    for op, operand in _operands(expr):
        if op in ("and", "unless"):
            continue
        groups = list(_groups(operand))
        outside, pos = [], 0
        for start, end in groups:  # keep "f()" so that scan() still sees a function
            outside.append(operand[pos:start + 1] + ")")
            pos = end
        outside.append(operand[pos:])
        out.extend(scan("".join(outside))[0])
        for start, end in groups:
            before = operand[:start].rstrip()
            if re.search(r"(?<![a-zA-Z0-9_:])(" + "|".join(GROUPING) + r")$", before):
                continue  # a label list
            out.extend(value_selectors(operand[start + 1:end - 1]))
    return out


# -- dashboards --------------------------------------------------------------------------

@dataclass(frozen=True)
class Target:
    dashboard: str  # file name
    panel: str  # panel title
    ref: str  # refId
    expr: str
    instant: bool


def dashboards() -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in sorted(DASHBOARDS.glob("*.json"))}


def panels(dashboard: dict) -> Iterator[dict]:
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])  # collapsed rows keep their panels inside


def targets(name: str, dashboard: dict) -> Iterator[Target]:
    for panel in panels(dashboard):
        for t in panel.get("targets", []):
            yield Target(name, panel.get("title", ""), t.get("refId", ""), t.get("expr", ""),
                         bool(t.get("instant")))


def substitute(expr: str, job: str = ".+", instance: str = ".+",
               rate_interval: str = "1m", range_: str = "5m", namespace: str = ".*",
               pod: str = ".*") -> str:
    """The query Grafana sends, with its variables filled in (namespace and pod as their
    "All", .*, which matches a Docker host's containers: they have neither label)."""
    seconds = int(re.fullmatch(r"(\d+)m", range_).group(1)) * 60  # type: ignore[union-attr]
    for var, value in (("$__rate_interval", rate_interval), ("$__range_s", str(seconds)),
                       ("$__range", range_), ("$__interval", "15s"), ("$job", job),
                       ("$instance", instance), ("${job}", job), ("${instance}", instance),
                       ("$namespace", namespace), ("$pod", pod), ("${namespace}", namespace),
                       ("${pod}", pod)):
        expr = expr.replace(var, value)
    return expr


# -- rules -------------------------------------------------------------------------------

def rule_files() -> list[Path]:
    return sorted(ALERTS.glob("*.rules.yml"))


def unit_test_files() -> list[Path]:
    return sorted((ALERTS / "tests").glob("*.test.yml"))
