"""``docker-hygiene-exporter bundle``: writes the packaged rules, runbook and dashboards, also
from a built package (not only from this checkout), and adapts the job matcher and runbook.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from exporter import bundle
from tests.promql import ALERTS, DASHBOARDS, ROOT
from tests.services import need


def cli(*args: str, cwd: Path = ROOT, env: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "exporter", *args], capture_output=True,
                          text=True, timeout=60, cwd=cwd, env={**os.environ, **(env or {})})


def source_files() -> dict[str, bytes]:
    """What the bundle should hold: the checkout's files minus the promtool unit tests."""
    out = {}
    for top, root in (("alerts", ALERTS), ("dashboards", DASHBOARDS)):
        for path in root.rglob("*"):
            rel = path.relative_to(root)
            if path.is_file() and "tests" not in rel.parts and "__pycache__" not in rel.parts:
                out[f"{top}/{rel}"] = path.read_bytes()
    return out


def written(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes()
            for p in directory.rglob("*") if p.is_file()}


def test_bundle_writes_every_file_unchanged(tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    result = cli("bundle", "--output", str(out))
    assert result.returncode == 0, result.stderr
    files = written(out)
    assert files == source_files()
    assert result.stdout.split() == [str(out / rel) for rel in sorted(files)]
    assert {"alerts/runbook.md", "alerts/alertmanager.example.yml",
            "dashboards/host-overview.json",
            "dashboards/provisioning/dashboards/docker-hygiene.yml"} <= set(files)
    assert len([f for f in files if f.endswith(".rules.yml")]) == 7
    # Again into the same directory: overwritten, same result.
    assert cli("bundle", "--output", str(out)).returncode == 0
    assert written(out) == files


def test_bundle_replaces_job_matcher_and_runbook(tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    result = cli("bundle", "-o", str(out), "--job-matcher", 'job="docker"',
                 "--runbook-url", "https://wiki.example/docker/runbook")
    assert result.returncode == 0, result.stderr
    rules = sorted((out / "alerts").glob("*.rules.yml"))
    for f in rules:
        text = f.read_text()
        assert bundle.DEFAULT_JOB_MATCHER not in text, f.name
        assert 'job="docker"' in text, f.name
        urls = re.findall(r"runbook_url: (\S+)", text)
        assert urls and all(u.startswith("https://wiki.example/docker/runbook#dockerhygiene")
                            for u in urls), urls
    # node_exporter's matcher is not the exporter's: left alone.
    assert 'job=~".*node.*"' in (out / "alerts" / "disk.rules.yml").read_text()
    check = subprocess.run([need("promtool"), "check", "rules", *map(str, rules)],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    # Dashboards select jobs with their own variable; their links to the runbook follow the
    # rules': otherwise unchanged.
    for source in sorted(DASHBOARDS.glob("*.json")):
        text = (out / "dashboards" / source.name).read_text()
        assert text == source.read_text().replace(
            f'"{bundle.RUNBOOK_URL}#', '"https://wiki.example/docker/runbook#'), source.name
        links = [link["url"] for p in json.loads(text)["panels"] for link in p.get("links", [])]
        assert links and all(u.startswith("https://wiki.example/docker/runbook#dockerhygiene")
                             for u in links), (source.name, links)


def test_bundle_refuses_bad_arguments(tmp_path: Path) -> None:
    for args, message in (
            (("--job-matcher", "docker"), "is not one label matcher"),
            (("--job-matcher", 'job="a", instance="b"'), "is not one label matcher"),
            (("--runbook-url", "wiki/runbook"), "is not an http(s) URL"),
            (("--runbook-url", "https://wiki.example/rb#top"), "without a #fragment")):
        result = cli("bundle", "--output", str(tmp_path / "x"), *args)
        assert result.returncode == 2, (args, result.stderr)
        assert message in result.stderr, (args, result.stderr)
    assert not (tmp_path / "x").exists()
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = cli("bundle", "--output", str(blocker / "sub"))
    assert result.returncode == 1 and "cannot write" in result.stderr
    assert "bundle" in cli("--help").stdout


def test_bundle_works_from_the_built_package(tmp_path: Path) -> None:
    """pyproject's package-data ships the files: build the package, bundle from the build."""
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(ROOT / "README.md", src)
    # The venv's setuptools may predate license strings (PEP 639); file selection, which is
    # what this tests, does not depend on the license field.
    pyproject = (ROOT / "pyproject.toml").read_text()
    (src / "pyproject.toml").write_text(
        re.sub(r'^license = "([^"]+)"$', r'license = {text = "\1"}', pyproject, flags=re.M))
    shutil.copytree(ROOT / "exporter", src / "exporter",
                    ignore=shutil.ignore_patterns("__pycache__"))
    lib = tmp_path / "lib"
    build = subprocess.run([sys.executable, "-c", "from setuptools import setup; setup()",
                            "-q", "build_py", "--build-lib", str(lib)], cwd=src,
                           capture_output=True, text=True, timeout=120)
    assert build.returncode == 0, build.stdout + build.stderr
    env = {"PYTHONPATH": str(lib)}
    where = subprocess.run([sys.executable, "-c", "import exporter; print(exporter.__file__)"],
                           cwd=tmp_path, env={**os.environ, **env}, capture_output=True,
                           text=True, timeout=60)
    assert where.stdout.strip() == str(lib / "exporter" / "__init__.py"), where
    out = tmp_path / "bundle"
    result = cli("bundle", "--output", str(out), cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert written(out) == source_files()
