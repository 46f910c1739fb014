"""The Grafana dashboards follow the conventions that make them provisionable and reusable.

Grafana is not installable here, so each convention is a lint below; every lint is also run
on a broken example to show it can fail. Their queries run against a real Prometheus in
tests/test_bundle_prometheus.py.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.promql import (
    DASHBOARDS,
    Target,
    dashboards,
    panels,
    rule_files,
    scan,
    substitute,
    targets,
    value_selectors,
)
from tests.services import need

DS = {"type": "prometheus", "uid": "${datasource}"}
UIDS = {"host-overview.json": "docker-hygiene-host", "fleet.json": "docker-hygiene-fleet",
        "registry-pulls.json": "docker-hygiene-registry-pulls"}
# Dashboards of one host: their instance list must not offer the fleet's central checker.
HOST_DASHBOARDS = {"host-overview.json"}
# What the issue asks each dashboard to show, by words in its panel titles.
REQUIRED_PANELS = {
    "host-overview.json": ["Disk usage by kind", "Reclaimable by kind", "Top images by size",
                           "Oldest images", "Oldest containers", "Dangling images",
                           "Stale containers", "Drifted containers", "Pull rates",
                           "Newer versions", "Update maturity", "Unsigned images running",
                           "Engine", "Image filesystem (containerd nodes)"],
    "fleet.json": ["Hosts wasting most disk", "Images drifted on most hosts",
                   "Longest-drifted running containers", "Longest-stale running containers",
                   "Registry rate-limit budget", "Upstream check failures",
                   "Newer versions by host", "Update maturity", "Unsigned images running",
                   "Hosts by engine", "Image filesystem per node (containerd nodes)"],
    "registry-pulls.json": ["Docker Hub pulls", "Registry pulls", "Harbor pulls"],
}
# The table that lists what each stale or drift count counts, in the same dashboard.
COUNTED_IN = {
    ("host-overview.json", "Stale containers"): "Stale containers",
    ("host-overview.json", "Drifted containers"): "Drifted containers",
    ("fleet.json", "Stale containers"): "Longest-stale running containers",
    ("fleet.json", "Drifted containers"): "Longest-drifted running containers",
}
# Fields coloured at an alert's threshold, read from the rule: (dashboard, panel title, panel
# type, field) -> alert. The field is a refId or a column's display name when an override
# colours it, "" when the panel's defaults do.
AT_ALERT_THRESHOLD = {
    ("host-overview.json", "Reclaimable", "stat", ""): "DockerHygieneReclaimableSpaceHigh",
    ("host-overview.json", "Dangling images", "stat", "B"): "DockerHygieneDanglingImagesLarge",
    ("host-overview.json", "Dangling images and build cache", "timeseries", "A"):
        "DockerHygieneDanglingImagesLarge",
    ("host-overview.json", "Dangling images and build cache", "timeseries", "B"):
        "DockerHygieneBuildCacheLarge",
    ("host-overview.json", "Oldest images", "table", ""): "DockerHygieneRunningImageTooOld",
    ("host-overview.json", "Oldest containers", "table", ""): "DockerHygieneContainerTooOld",
    ("host-overview.json", "Stale containers", "table", ""): "DockerHygieneContainerImageStale",
    ("host-overview.json", "Drifted containers", "table", ""): "DockerHygieneContainerDrifted",
    ("host-overview.json", "Collectors", "table", ""): "DockerHygieneCollectorStale",
    ("fleet.json", "Hosts wasting most disk", "bargauge", ""):
        "DockerHygieneReclaimableSpaceHigh",
    ("fleet.json", "Build cache and dangling images per host", "table", "Build cache"):
        "DockerHygieneBuildCacheLarge",
    ("fleet.json", "Build cache and dangling images per host", "table", "Dangling images"):
        "DockerHygieneDanglingImagesLarge",
    ("fleet.json", "Longest-drifted running containers", "table", ""):
        "DockerHygieneContainerDrifted",
    ("fleet.json", "Longest-stale running containers", "table", ""):
        "DockerHygieneContainerImageStale",
    ("fleet.json", "Oldest running images", "table", ""): "DockerHygieneRunningImageTooOld",
    ("fleet.json", "Registry rate-limit budget", "timeseries", ""):
        "DockerHygieneRegistryRateLimitLow",
    ("registry-pulls.json", "Registry rate-limit budget", "timeseries", ""):
        "DockerHygieneRegistryRateLimitLow",
    ("host-overview.json", "Image filesystem use (containerd nodes)", "timeseries", ""):
        "DockerHygieneImageFilesystemAboveGCThreshold",
    ("fleet.json", "Image filesystem per node (containerd nodes)", "table", "Use"):
        "DockerHygieneImageFilesystemAboveGCThreshold",
}
# Fields that are no problem by themselves: a neutral colour, never red.
NEUTRAL = {("host-overview.json", "Dangling images", "stat", "A")}
# Labels the container:* recording rules do not carry (job, instance, namespace, pod,
# container, image and, for newer versions, latest only): a query that reads them would come
# back empty.
NOT_ON_CONTAINER_RULES = {"id", "image_id", "state"}


def lint_target(t: Target) -> list[str]:
    """Problems of one query: unfiltered selectors, fixed ranges."""
    where = f"{t.dashboard} / {t.panel} / {t.ref}"
    if not t.expr.strip():
        return [f"{where}: empty query"]
    problems = []
    selectors, ranges = scan(t.expr)
    if not selectors:
        problems.append(f"{where}: selects no metric")
    for sel in selectors:
        for label, var in (("job", "$job"), ("instance", "$instance")):
            if sel.matchers.get(label) != ("=~", var):
                problems.append(f'{where}: {sel.name or "{}"} lacks {label}=~"{var}"')
        # Container series carry a Kubernetes pod's namespace and pod on containerd nodes.
        if sel.name.startswith(("docker_container_", "container:")):
            for label, var in (("namespace", "$namespace"), ("pod", "$pod")):
                if sel.matchers.get(label) != ("=~", var):
                    problems.append(f'{where}: {sel.name} lacks {label}=~"{var}"')
    for words in re.findall(r"\b(?:by|on)\s*\(([^)]*)\)", t.expr):
        keys = {w.strip() for w in words.split(",")}
        if "container" in keys and not {"namespace", "pod"} <= keys:
            problems.append(f"{where}: by/on ({words}) without namespace and pod: containers "
                            "of different pods would be joined or summed as one")
    if any(sel.name.startswith("container:") for sel in selectors):
        used = {label for sel in selectors if sel.name.startswith("container:")
                for label in sel.matchers}
        for words in re.findall(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*"
                                r"\(([^)]*)\)", t.expr):
            used |= {w.strip() for w in words.split(",")}
        if used & NOT_ON_CONTAINER_RULES:
            problems.append(f"{where}: reads {sorted(used & NOT_ON_CONTAINER_RULES)}, which "
                            "the container:* recording rules do not carry")
    for r in ranges:
        allowed = {"$__rate_interval", "$__range"} if t.instant else {"$__rate_interval"}
        if r not in allowed:
            problems.append(f"{where}: range [{r}] instead of [$__rate_interval]"
                            + (" or [$__range]" if t.instant else ""))
    return problems


def lint_dashboard(name: str, d: dict[str, Any]) -> list[str]:
    """Problems of one dashboard: provisioning, variables, panels, layout, every query."""
    problems = []
    text = json.dumps(d)
    if "__inputs" in d or "${DS_" in text:
        problems.append(f"{name}: exported for sharing (__inputs / ${{DS_...}}), "
                        "not provisionable")
    if not re.fullmatch(r"docker-hygiene-[a-z-]+", str(d.get("uid"))) or len(d["uid"]) > 40:
        problems.append(f"{name}: uid {d.get('uid')!r} is not a fixed docker-hygiene-* uid")
    if d.get("id") is not None:
        problems.append(f"{name}: id must be null (Grafana assigns it)")
    if "docker-hygiene" not in d.get("tags", []):
        problems.append(f"{name}: not tagged docker-hygiene")
    if d.get("timezone") != "browser":  # the viewer's time zone, not a fixed one
        problems.append(f"{name}: timezone {d.get('timezone')!r}, not browser")
    variables = {v.get("name"): v for v in d.get("templating", {}).get("list", [])}
    ds = variables.get("datasource", {})
    if ds.get("type") != "datasource" or ds.get("query") != "prometheus":
        problems.append(f"{name}: no datasource variable of type prometheus")
    for var in ("job", "instance"):
        v = variables.get(var, {})
        query = v.get("query", {})
        query = query.get("query", "") if isinstance(query, dict) else query
        if v.get("type") != "query" or v.get("datasource") != DS or "label_values" not in query:
            problems.append(f"{name}: variable {var} is not a label_values query on "
                            "${datasource}")
        if var == "instance" and 'job=~"$job"' not in query:
            problems.append(f"{name}: variable instance is not filtered by $job")
    if any(sel.name.startswith(("docker_container_", "container:"))
           for t in targets(name, d) for sel in scan(t.expr)[0]):
        for var in ("namespace", "pod"):
            v = variables.get(var, {})
            query = v.get("query", {})
            query = query.get("query", "") if isinstance(query, dict) else query
            # All must be .*: a Docker host's containers have no namespace or pod label.
            if v.get("type") != "query" or f", {var})" not in query \
                    or (v.get("includeAll"), v.get("allValue")) != (True, ".*"):
                problems.append(f"{name}: variable {var} is not a label_values query with "
                                "All as .*")
    ids, cells = set(), set()
    for panel in panels(d):
        title = panel.get("title", "")
        if panel.get("id") in ids:
            problems.append(f"{name}: panel id {panel.get('id')} used twice")
        ids.add(panel.get("id"))
        pos = panel.get("gridPos", {})
        if pos.get("x", 0) + pos.get("w", 0) > 24 or not pos.get("w") or not pos.get("h"):
            problems.append(f"{name} / {title}: gridPos {pos} outside the 24 columns")
        for x in range(pos.get("x", 0), pos.get("x", 0) + pos.get("w", 0)):
            for y in range(pos.get("y", 0), pos.get("y", 0) + pos.get("h", 0)):
                if (x, y) in cells:
                    problems.append(f"{name} / {title}: overlaps another panel at {x},{y}")
                    break
                cells.add((x, y))
        if panel.get("type") == "row":
            continue
        if panel.get("datasource") != DS:
            problems.append(f"{name} / {title}: datasource is not the $datasource variable")
        refs = [t.get("refId") for t in panel.get("targets", [])]
        if not refs or len(refs) != len(set(refs)) or None in refs:
            problems.append(f"{name} / {title}: targets missing or refIds not unique")
        for t in panel.get("targets", []):
            if t.get("datasource", DS) != DS:
                problems.append(f"{name} / {title}: a target names another datasource")
        defaults = panel.get("fieldConfig", {}).get("defaults", {})
        if panel.get("type") in ("stat", "bargauge", "gauge") and "thresholds" not in defaults \
                and defaults.get("color", {}).get("mode") != "fixed":
            problems.append(f"{name} / {title}: neither thresholds nor a fixed colour "
                            "(Grafana's default thresholds turn it red at 80)")
        if not defaults.get("unit") and any(
                re.search(r"\b(?:i?rate|deriv)\s*\(", t.get("expr", ""))
                or any(":rate" in sel.name for sel in scan(t.get("expr", ""))[0])
                for t in panel.get("targets", [])):
            problems.append(f"{name} / {title}: shows a rate without a unit")
    for t in targets(name, d):
        problems.extend(lint_target(t))
    return problems


def rules() -> list[dict[str, Any]]:
    return [r for f in rule_files() for group in yaml.safe_load(f.read_text())["groups"]
            for r in group["rules"]]


def alerts() -> dict[str, dict[str, Any]]:
    return {r["alert"]: r for r in rules() if "alert" in r}


def alert_data() -> dict[str, set[str]]:
    """Alert -> the metrics its value comes from, through the recording rules it reads:
    not the series that only filter it (the right of ``and``/``unless``: running containers,
    the exporter being up) nor info series (always 1, they bring labels). An alert whose value
    is an info series (DockerHygieneUnsignedImageRunning) is about what filters it."""
    records: dict[str, list[str]] = {}
    for r in rules():
        if "record" in r:
            records.setdefault(r["record"], []).append(r["expr"])

    def data(expr: str, seen: frozenset[str]) -> set[str]:
        names = set()
        for sel in value_selectors(expr):
            if sel.name.endswith("_info"):
                continue
            names.add(sel.name)
            for e in records.get(sel.name, []) if sel.name not in seen else []:
                names |= data(e, seen | {sel.name})
        return names

    out = {}
    for name, rule in alerts().items():
        out[name] = data(rule["expr"], frozenset()) or {
            sel.name for sel in scan(rule["expr"])[0] if not sel.name.endswith("_info")}
    return out


def lint_alert_links(name: str, d: dict[str, Any], data: dict[str, set[str]],
                     rules: dict[str, dict[str, Any]]) -> list[str]:
    """Every panel that reads what an alert is about links to the alert's runbook (the URL
    of its runbook_url) and names the alert in its description; every runbook link is one."""
    problems = []
    for panel in panels(d):
        if panel.get("type") == "row":
            continue
        where = f"{name} / {panel.get('title')}"
        read = {sel.name for t in panel.get("targets", []) for sel in scan(t.get("expr", ""))[0]}
        links = {link.get("url"): link for link in panel.get("links", [])}
        for alert in sorted(a for a, metrics in data.items() if metrics & read):
            url = rules[alert]["annotations"]["runbook_url"]
            link = links.get(url)
            if link is None:
                problems.append(f"{where}: reads {sorted(data[alert] & read)}, no link to "
                                f"{alert}'s runbook {url}")
            elif link.get("title") != f"Runbook: {alert}" or link.get("targetBlank") is not True:
                problems.append(f"{where}: the link to {url} is not titled 'Runbook: {alert}' "
                                "or opens in the same tab")
            if alert not in panel.get("description", ""):
                problems.append(f"{where}: the description does not name {alert}")
        for link in panel.get("links", []):
            title = link.get("title", "")
            alert = title.removeprefix("Runbook: ")
            if title.startswith("Runbook: ") and link.get("url") != rules.get(alert, {}).get(
                    "annotations", {}).get("runbook_url"):
                problems.append(f"{where}: {title} links {link.get('url')}, not the runbook_url "
                                f"of an alert {alert}")
    return problems


_COMPARISON = re.compile(r"(?<![=!<>])([<>])=?\s*([0-9.]+(?:\s*[*^]\s*[0-9.]+)*)")


def number(text: str) -> float:
    """The value of a rule's constant such as ``5 * 1024 ^ 3`` (``^`` binds tighter)."""
    value = 1.0
    for factor in text.split("*"):
        powers = [float(p) for p in factor.split("^")]
        result = powers[-1]
        for base in reversed(powers[:-1]):
            result = base ** result
        value *= result
    return value


def alert_threshold(rule: dict[str, Any]) -> tuple[str, float]:
    """The comparison and the constant of an alert with one comparison against a number."""
    found = _COMPARISON.findall(rule["expr"])
    assert len(found) == 1, f"{rule['alert']}: not one comparison with a number: {found}"
    op, text = found[0]
    return op, number(text)


def field_config(panel: dict[str, Any], field: str) -> dict[str, Any]:
    """The field config in force for ``field`` (refId, display name or "" for the defaults):
    the defaults with the properties of the overrides that match it."""
    fc = panel.get("fieldConfig", {})
    config = copy.deepcopy(fc.get("defaults", {}))
    for o in fc.get("overrides", []) if field else []:
        if o.get("matcher", {}).get("id") in ("byFrameRefID", "byName") \
                and o["matcher"].get("options") == field:
            for prop in o.get("properties", []):
                if prop["id"].startswith("custom."):
                    config.setdefault("custom", {})[prop["id"][7:]] = prop.get("value")
                else:
                    config[prop["id"]] = prop.get("value")
    return config


def lint_thresholds(name: str, d: dict[str, Any], rules: dict[str, dict[str, Any]]
                    ) -> list[str]:
    """Fields coloured at an alert's threshold turn red where the alert fires; counts that
    are no problem by themselves stay neutral; rate-limit budgets are fractions."""
    problems = []
    by_key = {(p.get("title"), p.get("type")): p for p in panels(d)}
    for (dashboard, title, kind, field), alert in AT_ALERT_THRESHOLD.items():
        if dashboard != name:
            continue
        where = f"{name} / {title} ({kind}) {field or 'defaults'}"
        panel = by_key.get((title, kind))
        if panel is None:
            problems.append(f"{where}: no such panel")
            continue
        config = field_config(panel, field)
        op, value = alert_threshold(rules[alert])
        steps = config.get("thresholds", {}).get("steps", [])
        reds = [s.get("value") for s in steps if s.get("color") == "red"]
        if op == ">" and (not reds or reds[0] != value):
            problems.append(f"{where}: red from {reds[0] if reds else None}, but {alert} fires "
                            f"above {value:g}")
        if op == "<" and (reds[:1] != [None] or len(steps) < 2 or steps[1].get("value") != value):
            problems.append(f"{where}: not red below {value:g}, where {alert} fires: {steps}")
        if config.get("color", {}).get("mode") == "fixed":
            problems.append(f"{where}: a fixed colour hides the thresholds")
        if kind == "table" and config.get("custom", {}).get("cellOptions", {}).get("type") \
                not in ("color-text", "color-background"):
            problems.append(f"{where}: the table's cells are not coloured by the thresholds")
        if kind == "timeseries" and config.get("custom", {}).get(
                "thresholdsStyle", {}).get("mode", "off") == "off":
            problems.append(f"{where}: the thresholds are not drawn")
    for dashboard, title, kind, field in NEUTRAL:
        panel = by_key.get((title, kind))
        if dashboard == name and (panel is None or field_config(panel, field).get(
                "color", {}).get("mode") != "fixed"):
            problems.append(f"{name} / {title} ({kind}) {field}: not a neutral colour")
    for panel in panels(d):
        if "rate-limit budget" in panel.get("title", "").lower():
            config = field_config(panel, "")
            got = (config.get("min"), config.get("max"), config.get("unit"))
            if got != (0, 1, "percentunit"):
                problems.append(f"{name} / {panel['title']}: min, max, unit {got}, not "
                                "0, 1, percentunit")
    return problems


def variable_query(d: dict[str, Any], var: str) -> str:
    v = next((v for v in d.get("templating", {}).get("list", []) if v.get("name") == var), {})
    query = v.get("query", "")
    return query.get("query", "") if isinstance(query, dict) else query


def lint_host_variables(name: str, d: dict[str, Any], host: set[str],
                        checker: set[str]) -> list[str]:
    """A host dashboard's job and instance lists come from a metric that host exporters
    export and the fleet's central checker does not: picking the checker blanks every panel.
    """
    problems = []
    for var in ("job", "instance"):
        query = variable_query(d, var)
        m = re.fullmatch(r"\s*label_values\((.*),\s*[a-zA-Z_]+\s*\)\s*", query)
        selectors = scan(m.group(1))[0] if m else []
        if not selectors:
            problems.append(f"{name}: variable {var} selects no metric: {query!r}")
        for sel in selectors:
            if sel.name not in host or sel.name in checker:
                problems.append(f"{name}: variable {var} reads {sel.name or '{}'}, not a "
                                "metric of host exporters only (the central checker "
                                f"exports {sel.name in checker})")
    return problems


def exported(registry: Any) -> set[str]:
    return {f.name + "_total" if f.type == "counter" else f.name for f in registry.collect()}


@pytest.fixture(scope="module")
def host_and_checker_metrics() -> tuple[set[str], set[str]]:
    """The metric names a host exporter and the central checker (--upstream.mode=central)
    export, from the collectors the exporter builds for each."""
    from exporter.app import Parts, build_registry
    from exporter.snapshots import TagState, UpstreamSnapshot
    from exporter.sources.loop import Source
    from exporter.state import StateStore
    from tests.test_golden import registry_for_golden

    central: Source[UpstreamSnapshot] = Source("upstream", lambda: None, 60.0)
    central.snapshot = UpstreamSnapshot((TagState("nginx:1", "", "known", "", "sha256:" + "a" * 64,
                                                  "", 1.0, None, 1.0),))
    # The checker reads no engine: build_collectors leaves engine and disk unused.
    parts = Parts(engine=None, disk=None, upstream=central,  # type: ignore[arg-type]
                  store=StateStore(None), central=True)
    checker = build_registry(parts)
    host, central_names = exported(registry_for_golden()), exported(checker)
    assert "docker_registry_tag_digest_info" in central_names and "docker_up" in host
    return host, central_names


def series(panel: dict[str, Any]) -> set[tuple[str, frozenset]]:
    """What a panel's queries select: metric names with their matchers."""
    return {(sel.name, frozenset(sel.matchers.items()))
            for t in panel.get("targets", []) for sel in scan(t.get("expr", ""))[0]}


def lint_counts(name: str, d: dict[str, Any]) -> list[str]:
    """A stale or drift count counts the rows of its table: both select the same series, and
    both descriptions name what they select. Counting another selection (all containers,
    a raw metric) made the count say 1 above an empty table."""
    problems = []
    by_title = {(p.get("type"), p.get("title")): p for p in panels(d)}
    for stat in panels(d):
        title = stat.get("title", "")
        if stat.get("type") != "stat" or not re.search(r"stale|drift", title, re.I):
            continue
        table = by_title.get(("table", COUNTED_IN.get((name, title))))
        if table is None:
            problems.append(f"{name} / {title}: no table lists what it counts")
            continue
        exprs = [t.get("expr", "") for t in stat.get("targets", [])]
        if len(exprs) != 1 or not re.match(r"\s*count\(", exprs[0]):
            problems.append(f"{name} / {title}: not one count() of the table's rows")
        if series(stat) != series(table):
            problems.append(f"{name} / {title}: counts {sorted(series(stat))}, but "
                            f"{table['title']!r} lists {sorted(series(table))}")
        for panel in (stat, table):
            for metric in sorted({n for n, _ in series(panel)}):
                if metric not in panel.get("description", ""):
                    problems.append(f"{name} / {panel['title']} ({panel['type']}): the "
                                    f"description does not say it reads {metric}")
    return problems


@pytest.fixture(scope="module")
def all_dashboards() -> dict[str, dict[str, Any]]:
    return dashboards()


def test_dashboards_are_the_three_with_fixed_uids(all_dashboards: dict) -> None:
    assert {n: d["uid"] for n, d in all_dashboards.items()} == UIDS
    for path in DASHBOARDS.glob("*.json"):
        json.loads(path.read_text())  # valid JSON, whatever the above found


@pytest.mark.parametrize("name", sorted(UIDS))
def test_dashboard_lint(all_dashboards: dict, name: str) -> None:
    assert lint_dashboard(name, all_dashboards[name]) == []


def test_alert_thresholds_are_read_from_the_rules() -> None:
    rules = alerts()
    assert alert_threshold(rules["DockerHygieneDanglingImagesLarge"]) == (">", 5 * 1024 ** 3)
    assert alert_threshold(rules["DockerHygieneRegistryRateLimitLow"]) == ("<", 0.1)
    assert alert_threshold(rules["DockerHygieneContainerTooOld"]) == (">", 90 * 86400)
    assert {a for a in AT_ALERT_THRESHOLD.values()} <= set(rules)


def test_value_selectors_leave_filters_and_label_lists_out() -> None:
    expr = ('sum by (job, instance) (a{x="(y)"} * on (job) group_left (z) b) and on (job) c '
            'unless d or label_replace(e, "h", "$1", "i", "(.+?)(?::[0-9]+)?") and (f or g)')
    assert [sel.name for sel in value_selectors(expr)] == ["a", "b", "e"]


def test_what_alerts_are_about() -> None:
    data = alert_data()
    assert set(data) == set(alerts())
    assert data["DockerHygieneUnsignedImageRunning"] == {"docker_image_upstream_signed"}
    assert data["DockerHygieneContainerImageStale"] == {
        "container:docker_image_stale_age_seconds", "docker_container_image_stale",
        "docker_image_last_tagged_timestamp_seconds"}  # not docker_container_info{running}
    assert data["DockerHygieneRegistryRateLimited"] == {"docker_registry_requests_total"}
    assert data["DockerHygieneDiskFillingUp"] == {"node_filesystem_avail_bytes"}
    assert "image:docker_fleet_drift" in data["DockerHygieneFleetContainerDrifted"]
    assert {"repository:docker_pulls:rate1h", "docker_harbor_repository_pulls_total"} <= \
        data["DockerHygienePullSurge"]
    assert all(data.values())


@pytest.mark.parametrize("name", sorted(UIDS))
def test_panels_link_their_alerts_runbooks(all_dashboards: dict, name: str) -> None:
    assert lint_alert_links(name, all_dashboards[name], alert_data(), alerts()) == []


@pytest.mark.parametrize("name", sorted(UIDS))
def test_thresholds_are_the_alerts(all_dashboards: dict, name: str) -> None:
    assert lint_thresholds(name, all_dashboards[name], alerts()) == []


@pytest.mark.parametrize("name", sorted(UIDS))
def test_counts_count_their_tables_rows(all_dashboards: dict, name: str) -> None:
    assert lint_counts(name, all_dashboards[name]) == []
    stats = [p["title"] for p in panels(all_dashboards[name]) if p["type"] == "stat"]
    assert {t for n, t in COUNTED_IN if n == name} <= set(stats)


@pytest.mark.parametrize("name", sorted(HOST_DASHBOARDS))
def test_host_dashboard_lists_hosts_only(all_dashboards: dict, name: str,
                                         host_and_checker_metrics: tuple) -> None:
    assert lint_host_variables(name, all_dashboards[name], *host_and_checker_metrics) == []


@pytest.mark.parametrize("name", sorted(UIDS))
def test_dashboard_shows_what_the_issue_asks(all_dashboards: dict, name: str) -> None:
    titles = [p.get("title", "") for p in panels(all_dashboards[name])]
    for wanted in REQUIRED_PANELS[name]:
        assert any(wanted.lower() in t.lower() for t in titles), f"{name}: no {wanted} panel"


def test_every_query_parses(tmp_path: Path, all_dashboards: dict) -> None:
    """promtool parses each query (variables filled in) as a recording rule's expression."""
    rules = [{"record": f"dashboard_query_{i}", "expr": substitute(t.expr)}
             for i, t in enumerate(t for n, d in all_dashboards.items() for t in targets(n, d))]
    assert len(rules) > 40
    f = tmp_path / "dashboard-queries.yml"
    f.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    result = subprocess.run([need("promtool"), "check", "rules", str(f)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_provisioning_files() -> None:
    prov = DASHBOARDS / "provisioning"
    sources = yaml.safe_load((prov / "datasources" / "docker-hygiene.yml").read_text())
    assert sources["apiVersion"] == 1
    assert [s["type"] for s in sources["datasources"]] == ["prometheus"]
    providers = yaml.safe_load((prov / "dashboards" / "docker-hygiene.yml").read_text())
    assert providers["apiVersion"] == 1
    (provider,) = providers["providers"]
    assert provider["type"] == "file"
    # The path the bundle command's output is documented to go to.
    assert provider["options"]["path"].endswith("/bundle/dashboards")


# -- the lints can fail ------------------------------------------------------------------

def _target(expr: str, instant: bool = False) -> Target:
    return Target("x.json", "panel", "A", expr, instant)


@pytest.mark.parametrize(("expr", "instant", "problem"), [
    ('docker_up{job=~"$job"}', False, 'docker_up lacks instance=~"$instance"'),
    ('docker_up{instance=~"$instance"}', False, 'docker_up lacks job=~"$job"'),
    ("sum(docker_disk_usage_bytes)", False, "docker_disk_usage_bytes lacks job"),
    ('docker_up{job="x", instance=~"$instance"}', False, "lacks job"),
    ('rate(docker_registry_requests_total{job=~"$job", instance=~"$instance"}[5m])', False,
     "range [5m]"),
    ('increase(docker_image_pulls_total{job=~"$job", instance=~"$instance"}[$__range])',
     False, "range [$__range]"),
    ('docker_up{job=~"$job", instance=~"$instance"} / on (instance) up', False,
     "up lacks job"),
    ("vector(1)", False, "selects no metric"),
    ('container:docker_image_age_seconds{job=~"$job", instance=~"$instance", state="running"}',
     False, "reads ['state']"),
    ('count by (image_id) (container:docker_image_age_seconds{job=~"$job", '
     'instance=~"$instance", namespace=~"$namespace", pod=~"$pod"})', False,
     "reads ['image_id']"),
    ('docker_container_info{job=~"$job", instance=~"$instance"}', False,
     'docker_container_info lacks namespace=~"$namespace"'),
    ('container:docker_image_stale_age_seconds{job=~"$job", instance=~"$instance", '
     'namespace=~"$namespace"}', False, 'lacks pod=~"$pod"'),
    ('docker_container_created_timestamp_seconds{job=~"$job", instance=~"$instance", '
     'namespace=~"$namespace", pod=~"$pod"} * on (job, instance, container) group_right '
     'docker_container_info{job=~"$job", instance=~"$instance", namespace=~"$namespace", '
     'pod=~"$pod"}', False, "without namespace and pod"),
])
def test_target_lint_catches(expr: str, instant: bool, problem: str) -> None:
    assert any(problem in p for p in lint_target(_target(expr, instant))), \
        lint_target(_target(expr, instant))


def test_target_lint_accepts_instant_range_and_grouping() -> None:
    expr = ('topk(10, sum by (repository) (increase(docker_hub_repository_pulls_total'
            '{job=~"$job", instance=~"$instance"}[$__range])))')
    assert lint_target(_target(expr, instant=True)) == []


@pytest.mark.parametrize(("change", "problem"), [
    (lambda d: d.update(__inputs=[{"name": "DS_PROMETHEUS"}]), "not provisionable"),
    (lambda d: d.update(uid=None), "not a fixed"),
    (lambda d: d.update(timezone="utc"), "not browser"),
    (lambda d: d.update(tags=[]), "not tagged"),
    (lambda d: d["templating"]["list"].pop(0), "no datasource variable"),
    (lambda d: d["panels"][1].update(datasource={"type": "prometheus", "uid": "abc"}),
     "datasource is not the $datasource variable"),
    (lambda d: d["panels"][2].update(gridPos=dict(d["panels"][1]["gridPos"])), "overlaps"),
    (lambda d: d["panels"][2].update(id=d["panels"][1]["id"]), "used twice"),
    (lambda d: next(v for v in d["templating"]["list"] if v["name"] == "namespace").update(
        allValue=".+"), "variable namespace is not a label_values query with All as .*"),
])
def test_dashboard_lint_catches(all_dashboards: dict, change: Any, problem: str) -> None:
    broken = copy.deepcopy(all_dashboards["host-overview.json"])
    change(broken)
    found = lint_dashboard("host-overview.json", broken)
    assert any(problem in p for p in found), found


@pytest.mark.parametrize(("query", "problem"), [
    ('label_values(docker_exporter_build_info{job=~"$job"}, instance)',
     "reads docker_exporter_build_info, not a metric of host exporters only"),
    ('label_values(docker_registry_tag_digest_info{job=~"$job"}, instance)',
     "reads docker_registry_tag_digest_info"),
    ("label_values(instance)", "selects no metric"),
])
def test_host_variable_lint_catches(all_dashboards: dict, host_and_checker_metrics: tuple,
                                    query: str, problem: str) -> None:
    broken = copy.deepcopy(all_dashboards["host-overview.json"])
    v = next(v for v in broken["templating"]["list"] if v["name"] == "instance")
    v["query"]["query"] = v["definition"] = query
    found = lint_host_variables("host-overview.json", broken, *host_and_checker_metrics)
    assert any(problem in p for p in found), found


def _stat(d: dict, title: str) -> dict:
    return next(p for p in d["panels"] if p["type"] == "stat" and p["title"] == title)


@pytest.mark.parametrize(("change", "problem"), [
    # The stat of the issue: stale containers in any state, from the raw metric.
    (lambda d: _stat(d, "Stale containers")["targets"][0].update(
        expr='sum(docker_container_image_stale{job=~"$job", instance=~"$instance"})'),
     "not one count() of the table's rows"),
    (lambda d: _stat(d, "Stale containers")["targets"][0].update(
        expr='count(docker_container_image_stale{job=~"$job", instance=~"$instance"} == 1)'),
     "but 'Stale containers' lists"),
    (lambda d: _stat(d, "Drifted containers")["targets"][0].update(
        expr='count(container:docker_upstream_drift_age_seconds{job=~"$job", '
             'instance=~"$instance"}) or vector(0)'), "but 'Drifted containers' lists"),
    (lambda d: _stat(d, "Stale containers").update(description="Stale."),
     "does not say it reads container:docker_image_stale_age_seconds"),
    (lambda d: _stat(d, "Stale containers").update(title="Stale things"),
     "no table lists what it counts"),
])
def test_count_lint_catches(all_dashboards: dict, change: Any, problem: str) -> None:
    broken = copy.deepcopy(all_dashboards["host-overview.json"])
    change(broken)
    found = lint_counts("host-overview.json", broken)
    assert any(problem in p for p in found), found


def _panel(d: dict, title: str, kind: str | None = None) -> dict:
    return next(p for p in panels(d) if p["title"] == title and kind in (None, p["type"]))


def _steps(*pairs: tuple[str, float | None]) -> dict:
    return {"mode": "absolute", "steps": [{"color": c, "value": v} for c, v in pairs]}


@pytest.mark.parametrize(("dashboard", "change", "problem"), [
    # The stat of the issue: a count of dangling images, red at 1.
    ("host-overview.json", lambda d: _panel(d, "Dangling images", "stat").update(
        fieldConfig={"defaults": {"thresholds": _steps(("green", None), ("red", 1))},
                     "overrides": []}), "red from 1, but DockerHygieneDanglingImagesLarge"),
    ("host-overview.json", lambda d: _panel(d, "Dangling images", "stat")["fieldConfig"][
        "defaults"].update(color={"mode": "thresholds"}), "A: not a neutral colour"),
    ("host-overview.json", lambda d: _panel(d, "Reclaimable")["fieldConfig"]["defaults"].update(
        thresholds=_steps(("green", None), ("red", 10 * 1024 ** 3))),
     "fires above 2.14748e+10"),
    ("host-overview.json", lambda d: _panel(d, "Oldest images")["fieldConfig"]["defaults"].pop(
        "custom"), "cells are not coloured"),
    ("host-overview.json", lambda d: _panel(d, "Dangling images and build cache")[
        "fieldConfig"]["defaults"].pop("custom"), "thresholds are not drawn"),
    ("fleet.json", lambda d: _panel(d, "Build cache and dangling images per host")[
        "fieldConfig"]["overrides"].pop(0), "Build cache: red from None"),
    ("fleet.json", lambda d: _panel(d, "Reclaimable")["fieldConfig"]["defaults"].pop("color"),
     "Reclaimable: neither thresholds nor a fixed colour"),
    ("fleet.json", lambda d: _panel(d, "Registry rate-limit budget")["fieldConfig"][
        "defaults"].pop("max"), "min, max, unit (0, None, 'percentunit')"),
    ("fleet.json", lambda d: _panel(d, "Registry rate-limit budget")["fieldConfig"][
        "defaults"].update(thresholds=_steps(("green", None))), "not red below 0.1"),
    ("registry-pulls.json", lambda d: _panel(d, "Registry rate-limit budget")["fieldConfig"][
        "defaults"].update(thresholds=_steps(("red", None), ("green", 0.2))),
     "not red below 0.1"),
])
def test_threshold_lint_catches(all_dashboards: dict, dashboard: str, change: Any,
                                problem: str) -> None:
    broken = copy.deepcopy(all_dashboards[dashboard])
    change(broken)
    found = lint_thresholds(dashboard, broken, alerts()) + lint_dashboard(dashboard, broken)
    assert any(problem in p for p in found), found


@pytest.mark.parametrize(("dashboard", "title"), [
    ("registry-pulls.json", "Pulls per hour by source"),
    ("registry-pulls.json", "Harbor pulls"),
    ("host-overview.json", "Pull rates"),
    ("fleet.json", "Registry errors"),
])
def test_rate_unit_lint_catches(all_dashboards: dict, dashboard: str, title: str) -> None:
    broken = copy.deepcopy(all_dashboards[dashboard])
    _panel(broken, title)["fieldConfig"]["defaults"].pop("unit")
    found = lint_dashboard(dashboard, broken)
    assert f"{dashboard} / {title}: shows a rate without a unit" in found, found


@pytest.mark.parametrize(("dashboard", "change", "problem"), [
    ("host-overview.json", lambda d: _panel(d, "Dangling images", "stat").pop("links"),
     "no link to DockerHygieneDanglingImagesLarge's runbook"),
    ("fleet.json", lambda d: _panel(d, "Drifted containers")["links"].pop(1),
     "no link to DockerHygieneFleetContainerDrifted's runbook"),
    ("registry-pulls.json", lambda d: _panel(d, "Pulls per hour by source").update(
        description="Pulls."), "the description does not name DockerHygienePullSurge"),
    ("registry-pulls.json", lambda d: _panel(d, "Registry rate-limit budget")["links"][0].update(
        targetBlank=False), "opens in the same tab"),
    ("host-overview.json", lambda d: _panel(d, "Top images by size").update(links=[
        {"title": "Runbook: DockerHygieneImageHuge", "url": "https://x/runbook.md#huge"}]),
     "not the runbook_url of an alert DockerHygieneImageHuge"),
    # A panel that starts reading an alert's metric needs the link too.
    ("registry-pulls.json", lambda d: _panel(d, "Registry pushes")["targets"][0].update(
        expr='sum(rate(docker_registry_pulls_total{job=~"$job", instance=~"$instance"}'
             '[$__rate_interval]))'), "no link to DockerHygienePullSurge's runbook"),
])
def test_alert_link_lint_catches(all_dashboards: dict, dashboard: str, change: Any,
                                 problem: str) -> None:
    broken = copy.deepcopy(all_dashboards[dashboard])
    change(broken)
    found = lint_alert_links(dashboard, broken, alert_data(), alerts())
    assert any(problem in p for p in found), found
