"""The reference tables in docs/ are the public interface: keep them equal to the code."""

from __future__ import annotations

import re
from pathlib import Path

from exporter import config
from exporter.app import build_registry
from exporter.config import SETTINGS
from tests.test_golden import cri_parts, registry_for_golden

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def table(doc: str, marker: str) -> list[list[str]]:
    """Rows of the Markdown table that follows ``<!-- marker: ... -->`` in docs/<doc>."""
    text = (DOCS / doc).read_text()
    start = text.index(f"<!-- {marker}")
    lines = text[start:].splitlines()[1:]
    rows = []
    for line in lines[2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    assert rows, f"no table after {marker}"
    return rows


def code(cell: str) -> list[str]:
    return re.findall(r"`([^`]*)`", cell)


def test_metrics_table_equals_exposition() -> None:
    from exporter.collectors.fleet import FleetCollector
    from exporter.snapshots import TagState, UpstreamSnapshot
    from exporter.sources.loop import Source

    central: Source[UpstreamSnapshot] = Source("upstream", lambda: None, 60.0)
    central.snapshot = UpstreamSnapshot((TagState("nginx:1", "", "known", "", "sha256:" + "a" * 64,
                                                  "", 1.0, None, 1.0),))
    collected = [*registry_for_golden().collect(), *FleetCollector(central, 60.0).collect(),
                 *build_registry(cri_parts()).collect()]
    families: dict[str, tuple[str, set[str]]] = {}
    for f in collected:
        name = f.name + "_total" if f.type == "counter" else f.name
        labels = families.get(name, (f.type, set()))[1]
        families[name] = (f.type, labels | {k for s in f.samples for k in s.labels})
    documented = {}
    for name, kind, labels, meaning in table("metrics.md", "metrics-table"):
        assert meaning, name
        documented[code(name)[0]] = (kind, set(code(labels)))
    assert documented == families


def test_settings_table_equals_settings() -> None:
    rows = {(code(r[1]) or ["config.file"])[0]: r
            for r in table("configuration.md", "settings-table")}
    assert set(rows) == {"config.file"} | {s.key for s in SETTINGS}
    assert code(rows["config.file"][0]) == ["--config.file"]
    assert code(rows["config.file"][2]) == [config.ENV_PREFIX + "CONFIG_FILE"]
    for s in SETTINGS:
        flag, _key, env, default, meaning = rows[s.key]
        assert meaning, s.key
        if s.yaml_only:
            assert code(flag) == [] and code(env) == [], s.key
            continue
        assert code(flag) == ([] if s.secret else [s.flag]), s.key
        assert code(env) == [s.env], s.key
        shown = s.show(s.default) if s.default is not None else ""
        if shown:
            assert code(default) == [shown], s.key
        elif s.default is None:
            assert default, f"{s.key}: say what the computed default is"
        else:
            assert default == "", s.key


def test_yaml_example_is_a_valid_config(tmp_path: Path) -> None:
    example = (DOCS / "configuration.md").read_text().split("```yaml\n", 1)[1].split("```", 1)[0]
    f = tmp_path / "example.yml"
    f.write_text(example)
    cfg = config.build({}, environ={}, config_file=str(f))
    for s in SETTINGS:
        shown = s.show(s.default) if s.default is not None else ""
        if shown and not s.yaml_only:
            assert s.key.split(".")[-1] in example, f"{s.key} missing from the YAML example"
    defaults = config.build({}, environ={})
    assert {k: v for k, v in cfg.__dict__.items() if k != "config_file"} == {
        k: v for k, v in defaults.__dict__.items() if k != "config_file"}


def test_readme_is_a_quick_start() -> None:
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines: move reference to docs/"


def anchors(path: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces as hyphens."""
    found: set[str] = set()
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.M | re.S)
    for heading in re.findall(r"^#{1,6} +(.+?) *#*$", text, re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        anchor, n = slug, 0
        while anchor in found:
            n += 1
            anchor = f"{slug}-{n}"
        found.add(anchor)
    return found


def test_relative_links_resolve() -> None:
    pages = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
    checked = 0
    for page in pages:
        text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.M | re.S)
        text = re.sub(r"`[^`\n]*`", "", text)
        for target in re.findall(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", text):
            if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
                continue
            file, _, anchor = target.partition("#")
            dest = (page.parent / file).resolve() if file else page
            assert dest.exists(), f"{page.relative_to(ROOT)}: {target}: no such file"
            assert dest.is_relative_to(ROOT), f"{page.relative_to(ROOT)}: {target} leaves the repo"
            if anchor:
                assert dest.suffix == ".md", f"{page.relative_to(ROOT)}: {target}"
                assert anchor in anchors(dest), \
                    f"{page.relative_to(ROOT)}: {target}: no heading #{anchor} in {file or 'it'}"
            checked += 1
    assert checked > 20, checked
