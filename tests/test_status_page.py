"""The status page in a real browser: Debian's headless Chromium, driven through chromedriver,
loads / from an exporter process watching a real dockerd that holds a stale container and a
drifted tag in the real registry."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from exporter.status import human_size
from tests.services import Dockerd, Registry, need, wait_for
from tests.test_upstream import publish_elsewhere, push_version, status

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run")


@pytest.fixture
def browser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[webdriver.Chrome]:
    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must not look for downloads
    options = Options()
    options.binary_location = need("chromium")
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium'}",
                 "--window-size=1280,1000"):
        options.add_argument(flag)
    service = Service(need("chromedriver"), log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    try:
        yield driver
    finally:
        driver.quit()


def row(driver: webdriver.Chrome, section: str, text: str) -> str:
    """The visible text of the one table row of a section (or the page: "") that mentions
    ``text``."""
    scope = f"//section[@id='{section}']" if section else ""
    rows = driver.find_elements(By.XPATH, f"{scope}//tbody/tr[td[contains(., '{text}')]]")
    assert len(rows) == 1, (section, text, [r.text for r in rows])
    return rows[0].text


def full_page_screenshot(driver: webdriver.Chrome, path: Path, width: int) -> Path:
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(width, min(height + 100, 8000))
    driver.save_screenshot(str(path))
    print(f"screenshot: {path}")
    return path


def test_status_page_in_a_browser(dockerd: Dockerd, registry: Registry, exporter_factory,
                                  browser: webdriver.Chrome, tmp_path: Path) -> None:
    d = dockerd
    # A container whose tag was pulled again (here: rebuilt and pushed) but never recreated.
    stale_ref = f"{registry.address}/hygiene/page-stale:latest"
    push_version(d, stale_ref, "page stale one")
    d.cli("rmi", stale_ref)
    d.cli("pull", stale_ref)
    d.cli("run", "-d", "--name", "hygiene-page-stale", "--network", "none", stale_ref,
          "/bin/busybox", "sleep", "3600")
    push_version(d, stale_ref, "page stale two")
    # A tag the registry moved on: another machine pushed new content under it.
    drift_ref = f"{registry.address}/hygiene/page-drift:1.0"
    push_version(d, drift_ref, "page drift one")
    d.cli("rmi", drift_ref)
    d.cli("pull", drift_ref)
    d.cli("run", "-d", "--name", "hygiene-page-drift", "--network", "none", drift_ref,
          "/bin/busybox", "sleep", "3600")
    publish_elsewhere(d, drift_ref, "page drift two " * 20000)  # leaves 300 kB dangling
    d.cli("volume", "create", "hygiene-page-unused")
    try:
        exp = exporter_factory(
            "--docker.host", d.host, "--collector.engine.interval", "1s",
            "--collector.disk.interval", "1s", "--upstream.interval", "2s",
            "--upstream.include", f"^{registry.address}/hygiene/page-",
            "--docker.config", str(tmp_path / "none.json"))
        exp.wait_metrics(lambda m: status(m, drift_ref) == "drifted"
                         and m.get("docker_container_image_stale",
                                   container="hygiene-page-stale") == 1
                         and (m.get("docker_disk_reclaimable_bytes", kind="images") or 0) > 0,
                         timeout=60, what="drift, staleness and reclaimable disk")

        browser.get(exp.url + "/")
        assert browser.title == "Docker hygiene"
        stale_row = row(browser, "containers", "hygiene-page-stale")
        assert "stale" in stale_row and stale_ref in stale_row.replace("\n", "")
        drift_row = row(browser, "containers", "hygiene-page-drift")
        assert re.search(r"drifted (just now|since \d+ \w+ ago)", drift_row), drift_row
        tag_row = row(browser, "tags", "page-drift:1.0")
        assert re.search(r"drifted (just now|since \d+ \w+ ago)", tag_row), tag_row
        assert "hygiene-page-drift" in tag_row

        # Reclaimable disk in the docker CLI's units, equal to what the JSON twin says.
        doc = httpx.get(exp.url + "/status.json").json()
        reclaimable = human_size(doc["disk"]["reclaimable_bytes"])
        card = browser.find_element(By.CSS_SELECTOR, "a.card[href='#disk']").text
        assert card.splitlines() == [reclaimable,
                                     f"reclaimable of {human_size(doc['disk']['size_bytes'])} "
                                     "used"]
        images = {r["kind"]: r for r in doc["disk"]["kinds"]}["images"]
        assert images["reclaimable_bytes"] >= 300_000
        assert row(browser, "disk", "images").split()[-2] == \
            human_size(images["reclaimable_bytes"])
        assert "hygiene-page-unused" in browser.find_element(By.ID, "disk").get_attribute(
            "textContent")

        # Times read as ages, with the exact time on hover.
        times = browser.find_elements(By.TAG_NAME, "time")
        assert times and all(t.get_attribute("title").endswith(" UTC")
                             and t.get_attribute("datetime").endswith("Z") for t in times)
        assert all(t.text == "just now" or t.text.endswith(" ago") for t in times if t.text)
        # Everything on the page is the page's own: nothing fetched from anywhere else.
        assert browser.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name)") == []
        full_page_screenshot(browser, tmp_path / "status-page.png", 1280)

        # A phone: tables become label/value blocks, nothing wider than the screen.
        browser.set_window_size(390, 900)
        assert browser.execute_script("return document.documentElement.scrollWidth <= "
                                      "document.documentElement.clientWidth")
        assert "hygiene-page-stale" in browser.find_element(By.ID, "containers").text
        full_page_screenshot(browser, tmp_path / "status-page-phone.png", 390)

        # Dark mode follows the system's preference.
        browser.set_window_size(1280, 1000)
        browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {
            "features": [{"name": "prefers-color-scheme", "value": "dark"}]})
        assert browser.execute_script(
            "return getComputedStyle(document.body).backgroundColor") == "rgb(19, 21, 24)"
        full_page_screenshot(browser, tmp_path / "status-page-dark.png", 1280)

        # The configuration in force is one click away.
        browser.find_element(By.LINK_TEXT, "Configuration").click()
        assert browser.current_url == exp.url + "/config"
        assert row(browser, "", "upstream.interval").split() == [
            "upstream.interval", "2s"]
        browser.find_element(By.LINK_TEXT, "Metrics").click()
        assert "docker_up 1.0" in browser.find_element(By.TAG_NAME, "body").text
    finally:
        d.cli("rm", "-f", "hygiene-page-stale", "hygiene-page-drift")
        d.cli("volume", "rm", "hygiene-page-unused")


def test_engine_down_says_why_and_since_when(exporter_factory, tmp_path: Path) -> None:
    """A daemon that stops under the exporter: the page names the host and the cause, and
    says how old the figures it still shows are."""
    d = Dockerd(tmp_path / "d").start()
    try:
        exp = exporter_factory("--docker.host", d.host, "--collector.engine.interval", "1s",
                               "--collector.disk.interval", "1s", "--upstream.mode", "off")
        wait_for(lambda: httpx.get(exp.url + "/status.json").json()["engine_as_of"], 30,
                 "a first read of the engine")
    finally:
        d.stop()

    def failing() -> dict | None:
        doc = httpx.get(exp.url + "/status.json").json()
        engine = {s["name"]: s for s in doc["sources"]}["engine"]
        return doc if engine["state"] == "failing" else None
    doc = wait_for(failing, 30, "the engine source to fail")
    engine = doc["sources"][0]
    assert engine["name"] == "engine" and engine["last_success"] == doc["engine_as_of"]
    assert engine["reason"].startswith(f"cannot reach the Docker Engine at {d.host}: ")
    page = httpx.get(exp.url + "/").text
    assert '<div class="banner"><strong>Cannot reach the Docker Engine at ' \
           f"{d.host}: " in page
    assert "The figures below are from the last successful read, <time" in page
