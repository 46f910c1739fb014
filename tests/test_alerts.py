"""The alert rules: promtool accepts them and their unit tests pass, each alert is labelled,
annotated, runbooked, unit-tested firing and silent, and docs/operations.md's table says the same.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.bundle import DEFAULT_JOB_MATCHER, RUNBOOK_URL
from tests.promql import ALERTS, DASHBOARDS, ROOT, dashboards, rule_files, scan, targets
from tests.promql import unit_test_files as promtool_test_files
from tests.services import need

SEVERITIES = {"critical", "warning", "info"}
NODE_JOB = ("=~", ".*node.*")
OPERATIONS = (ROOT / "docs" / "operations.md").read_text()


def groups() -> list[tuple[Path, dict[str, Any]]]:
    return [(f, g) for f in rule_files() for g in yaml.safe_load(f.read_text())["groups"]]


def rules() -> list[dict[str, Any]]:
    return [r for _, g in groups() for r in g["rules"]]


def alerts() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for r in rules():
        if "alert" in r:
            assert r["alert"] not in found, f"alert {r['alert']} defined twice"
            found[r["alert"]] = r
    return found


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=ALERTS)


def test_layout() -> None:
    assert len(rule_files()) >= 5 and len(promtool_test_files()) >= 5
    assert len(alerts()) >= 18
    # The repository's top-level directories are the packaged ones, not copies.
    assert (ROOT / "alerts").is_symlink() and (ROOT / "alerts").resolve() == ALERTS
    assert (ROOT / "dashboards").is_symlink() and (ROOT / "dashboards").resolve() == DASHBOARDS


def test_promtool_check_rules() -> None:
    result = run(need("promtool"), "check", "rules", "--lint=all", "--lint-fatal",
                 *map(str, rule_files()))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(rule_files()), result.stdout


def test_promtool_unit_tests_pass() -> None:
    result = run(need("promtool"), "test", "rules", *map(str, promtool_test_files()))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FAILED" not in result.stdout + result.stderr


def test_every_rule_file_is_unit_tested() -> None:
    tested = set()
    for f in promtool_test_files():
        for rule_file in yaml.safe_load(f.read_text())["rule_files"]:
            path = (f.parent / rule_file).resolve()
            assert path.exists(), f"{f.name}: {rule_file} does not exist"
            tested.add(path)
    assert tested == {f.resolve() for f in rule_files()}


def test_groups_one_per_file_and_names() -> None:
    names = [g["name"] for _, g in groups()]
    assert len(names) == len(set(names)) == len(rule_files()), names
    for f, g in groups():
        assert g["name"] == "docker-hygiene-" + f.name.removesuffix(".rules.yml"), f.name


def test_alerts_are_labelled_and_annotated() -> None:
    for name, rule in alerts().items():
        assert re.fullmatch(r"DockerHygiene[A-Z][A-Za-z0-9]+", name), name
        assert rule.get("labels", {}).get("severity") in SEVERITIES, name
        notes = rule.get("annotations", {})
        assert set(notes) >= {"summary", "description", "runbook_url"}, name
        summary = notes["summary"].strip()
        # One sentence: a capital, one full stop at the end, and none inside.
        assert re.fullmatch(r"[A-Z][^.!?]*[.!?]", summary), f"{name}: summary {summary!r}"
        # The description names what to fix: it is templated with labels.
        assert re.search(r"\{\{ *\$labels\.(instance|host)", notes["description"]), name
        assert notes["runbook_url"] == f"{RUNBOOK_URL}#{name.lower()}", name


def github_anchors(markdown: str) -> set[str]:
    """Heading anchors as GitHub renders them."""
    anchors = set()
    for heading in re.findall(r"^#{1,6} +(.+?) *$", markdown, flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        anchors.add(slug)
    return anchors


def test_runbook_has_a_section_for_every_alert_and_no_other() -> None:
    runbook = (ALERTS / "runbook.md").read_text()
    anchors = github_anchors(runbook)
    assert RUNBOOK_URL.endswith("/" + str((ALERTS / "runbook.md").relative_to(ROOT)))
    for name, rule in alerts().items():
        anchor = rule["annotations"]["runbook_url"].partition("#")[2]
        assert anchor in anchors, f"{name}: runbook.md has no section #{anchor}"
    sections = set(re.findall(r"^## (\S+)$", runbook, flags=re.M))
    assert sections == set(alerts()), sections ^ set(alerts())
    # Each section says what to check and what fixes it.
    for block in runbook.split("\n## ")[1:]:
        assert "**Check.**" in block and "**Fix.**" in block, block.splitlines()[0]


def test_every_alert_is_unit_tested_firing_and_silent() -> None:
    firing: dict[str, list[str]] = {}
    silent: dict[str, list[str]] = {}
    severity = {name: r["labels"]["severity"] for name, r in alerts().items()}
    for f in promtool_test_files():
        for case in yaml.safe_load(f.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                name = check["alertname"]
                assert name in severity, f"{f.name}: tests unknown alert {name}"
                if check.get("exp_alerts"):
                    firing.setdefault(name, []).append(f.name)
                    for exp in check["exp_alerts"]:
                        assert exp["exp_labels"]["severity"] == severity[name], (f.name, name)
                        assert "description" in exp.get("exp_annotations", {}), (f.name, name)
                else:
                    silent.setdefault(name, []).append(f.name)
    assert set(severity) - set(firing) == set(), "alerts never shown firing"
    assert set(severity) - set(silent) == set(), "alerts never shown silent"


def test_every_selector_names_its_job() -> None:
    """`bundle --job-matcher` swaps one text: every selector of the exporter must carry it."""
    job = DEFAULT_JOB_MATCHER.split("=~")[1].strip('"')
    for rule in rules():
        name = rule.get("alert") or rule["record"]
        for sel in scan(rule["expr"])[0]:
            if ":" in sel.name:
                continue  # a recording rule's output: already selected
            want = NODE_JOB if sel.name.startswith("node_") else ("=~", job)
            assert sel.matchers.get("job") == want, f"{name}: {sel.name} {sel.matchers}"


def test_recording_rules_are_used() -> None:
    exprs = [r["expr"] for r in rules()]
    exprs += [t.expr for n, d in dashboards().items() for t in targets(n, d)]
    for record in {r["record"] for r in rules() if "record" in r}:
        uses = [e for e in exprs if record in {s.name for s in scan(e)[0]}]
        assert uses, f"recording rule {record} is used by no alert or dashboard"


def documented_alert_table() -> dict[str, tuple[str, str, str]]:
    start = OPERATIONS.index("<!-- alerts-table:")
    lines = OPERATIONS[start:].splitlines()[1:]
    assert lines[0].startswith("| Alert | Severity | Threshold | Meaning |"), lines[0]
    rows = {}
    for line in lines[2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        name = re.fullmatch(r"`(\w+)`", cells[0])
        assert name, line
        assert name.group(1) not in rows, f"{name.group(1)} listed twice"
        rows[name.group(1)] = (cells[1], cells[2], cells[3])
    return rows


def test_documented_alert_table_equals_rules() -> None:
    section = OPERATIONS.index("## Alerts and dashboards")
    marker = OPERATIONS.index("<!-- alerts-table:")
    assert section < marker and "\n## " not in OPERATIONS[section + 1:marker], \
        "the alerts table belongs in the section Alerts and dashboards"
    table = documented_alert_table()
    assert set(table) == set(alerts()), set(table) ^ set(alerts())
    for name, (severity, threshold, meaning) in table.items():
        assert severity == alerts()[name]["labels"]["severity"], name
        assert threshold and meaning, name


def test_only_exporter_down_pages() -> None:
    """critical pages someone: only when hygiene data is being lost, never for a state."""
    critical = {name for name, r in alerts().items() if r["labels"]["severity"] == "critical"}
    assert critical == {"DockerHygieneExporterDown"}


@pytest.mark.parametrize(("alertname", "receiver"), [
    ("DockerHygieneExporterDown", "pager"),
    ("DockerHygieneEngineDown", "tickets"),
    ("DockerHygieneContainerDrifted", "tickets"),
    ("DockerHygienePullSurge", "not-routed"),
])
def test_alertmanager_example_routes_by_severity(alertname: str, receiver: str) -> None:
    amtool = need("amtool")
    config = str(ALERTS / "alertmanager.example.yml")
    check = run(amtool, "check-config", config)
    assert check.returncode == 0, check.stdout + check.stderr
    severity = alerts()[alertname]["labels"]["severity"]
    labels = (f"severity={severity}", f"alertname={alertname}")
    routed = run(amtool, "config", "routes", "test", "--config.file", config, *labels)
    assert routed.returncode == 0, routed.stdout + routed.stderr
    assert routed.stdout.split() == [receiver]
    assert yaml.safe_load(Path(config).read_text())["receivers"][0] == {"name": "not-routed"}


_AM_MATCHER = re.compile(r'^\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*$')


def alertnames_matched(matchers: list[str]) -> set[str]:
    """The alerts of the rules an inhibit rule's matchers select (by alertname, and by
    severity where a matcher names it), as Alertmanager matches: regexes anchored."""
    chosen = set(alerts())
    for text in matchers:
        m = _AM_MATCHER.match(text)
        assert m, f"cannot read matcher {text!r}"
        label, op, value = m.groups()
        assert label in {"alertname", "severity"}, text
        def matches(name: str, label: str = label, op: str = op, value: str = value) -> bool:
            have = name if label == "alertname" else alerts()[name]["labels"]["severity"]
            hit = (re.fullmatch(value, have) is not None) if "~" in op else have == value
            return hit != op.startswith("!")
        chosen = {name for name in chosen if matches(name)}
    return chosen


def firing_label_sets() -> dict[str, list[set[str]]]:
    """Per alert, the label names of each firing alert the promtool unit tests expect."""
    found: dict[str, list[set[str]]] = {}
    for f in promtool_test_files():
        for case in yaml.safe_load(f.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                for exp in check.get("exp_alerts") or []:
                    found.setdefault(check["alertname"], []).append(set(exp["exp_labels"]))
    return found


# source alert -> (target alerts, labels that must be equal), as the example documents them.
INHIBITS = {
    "DockerHygieneEngineDown": (
        {"DockerHygieneCollectorFailing", "DockerHygieneCollectorStale"}, {"instance"}),
    "DockerHygieneRegistryRateLimited": (
        {"DockerHygieneUpstreamCheckFailing"}, {"instance", "registry"}),
    "DockerHygieneExporterDown": (
        {"DockerHygieneEngineDown", "DockerHygieneCollectorFailing",
         "DockerHygieneCollectorStale", "DockerHygieneCollectorDead"}, {"instance"}),
    "DockerHygieneContainerDrifted": (
        {"DockerHygieneUpstreamUpdateNotPulled"},
        {"instance", "namespace", "pod", "container", "image"}),
}
# Labels of a Kubernetes pod's containers (containerd nodes): absent on Docker and Podman
# hosts, where two alerts that both lack them are rightly equal.
POD_LABELS = {"namespace", "pod"}


def test_alertmanager_example_inhibit_rules() -> None:
    config = yaml.safe_load((ALERTS / "alertmanager.example.yml").read_text())
    found = {}
    for rule in config["inhibit_rules"]:
        assert set(rule) == {"source_matchers", "target_matchers", "equal"}, rule
        sources = alertnames_matched(rule["source_matchers"])
        assert len(sources) == 1, (rule, sources)
        source = sources.pop()
        assert source not in found, f"{source} inhibits in two rules"
        found[source] = (alertnames_matched(rule["target_matchers"]), set(rule["equal"]))
    assert found == INHIBITS
    # A 429 from one registry silences that registry's failing checks, not another's.
    assert "registry" in found["DockerHygieneRegistryRateLimited"][1]
    # Alertmanager counts a label both alerts lack as equal: every `equal` label must be one
    # that source and target carry, or a source would inhibit targets of any registry,
    # container or instance. The unit tests show every alert firing with its labels. The
    # pod labels are the exception: a Docker host's alerts lack them (equal there), a
    # containerd node's carry them, and a container alert keeps them (shown firing with
    # them in containerd.test.yml).
    labels = firing_label_sets()
    for source, (target_names, equal) in INHIBITS.items():
        for name in {source, *target_names}:
            assert labels.get(name), f"{name} is never shown firing"
            for have in labels[name]:
                assert equal - POD_LABELS <= have, f"{name} fires without {equal - have}"
    assert any(have >= POD_LABELS for have in labels["DockerHygieneContainerDrifted"])


def test_container_alerts_keep_pod_labels() -> None:
    """On a containerd node `container` is unique only with the pod's namespace and pod: every
    rule that aggregates or joins container series by `container` keeps both, and every
    container alert names them in its description when they are set."""
    for rule in rules():
        name = rule.get("alert") or rule["record"]
        for words in re.findall(r"\b(?:by|on)\s*\(([^)]*)\)", rule["expr"]):
            keys = {w.strip() for w in words.split(",")}
            if "container" in keys:
                assert keys >= POD_LABELS, f"{name}: by/on ({words}) without namespace, pod"
        description = rule.get("annotations", {}).get("description", "")
        if "$labels.container" in description:
            assert "{{ if $labels.namespace }}{{ $labels.namespace }}/{{ $labels.pod }} " \
                "{{ end }}{{ $labels.container }}" in description, name
