"""The status page in a real headless browser (Debian's Chromium driven by Selenium): the text a
user sees, landmarks and alt text, no script needed, and an update written with the plugin
appearing after a reload."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from tests.e2e.conftest import STATUS_NAMESPACE, Cluster, OperatorProcess, named_namespace
from tests.e2e.engine_helpers import TIMEOUT, Scenario
from tests.e2e.test_after_the_incident import kubectl
from tests.polling import wait_until

pytestmark = pytest.mark.e2e

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


@pytest.fixture
def s(crds_installed: Cluster, operator: OperatorProcess) -> Iterator[Scenario]:
    """In the namespace the test operator's statusPage.namespaces lists (only there is anything public)."""
    with named_namespace(crds_installed, STATUS_NAMESPACE) as name:
        yield Scenario(crds_installed, operator, name)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    assert CHROMIUM.exists(), "make browser installs Debian's chromium (make test does it first)"
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new",
        "--no-sandbox",  # the tests run as root here
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",  # no calls home: this machine's network is closed
        "--disable-component-update",
        "--disable-sync",
        "--window-size=390,844",  # a phone
        f"--user-data-dir={tmp_path / 'profile'}",
    ):
        options.add_argument(flag)
    options.add_experimental_option("prefs", {"profile.managed_default_content_settings.javascript": 2})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def test_the_status_page_in_a_real_browser(s: Scenario, browser: webdriver.Chrome) -> None:
    ns = ("-n", s.namespace)
    s.deployment("storefront", 1)
    kubectl(
        s,
        "open",
        "store-down",
        *ns,
        "--title",
        "The storefront is slow",
        "--severity",
        "P2",
        "--target",
        "Deployment/storefront",
    )
    first = "We are investigating slow page loads in the storefront."
    kubectl(s, "update", "store-down", first, *ns, "--public")
    url = f"http://127.0.0.1:{s.operator.status_port}/status"  # the status page's own port

    def showing(needle: str) -> str | None:
        browser.get(url)  # a reload each time; JavaScript is off
        text = str(browser.find_element(By.TAG_NAME, "body").text)
        return text if needle in text else None

    text = wait_until(lambda: showing(first), timeout=TIMEOUT, what="the first update")
    assert "The storefront is slow" in text
    assert "Investigating" in text
    assert "Major impact" in text
    assert "storefront" in text  # the affected service
    for landmark in ("header", "main", "footer"):
        assert browser.find_elements(By.TAG_NAME, landmark), landmark
    assert browser.find_element(By.TAG_NAME, "html").get_attribute("lang") == "en"
    assert [img for img in browser.find_elements(By.TAG_NAME, "img") if not img.get_attribute("alt")] == []
    assert browser.find_elements(By.TAG_NAME, "h1")[0].text == "Service status"

    second = "A fix is deployed; we are watching the storefront recover."
    kubectl(s, "update", "store-down", second, *ns, "--public")
    text = wait_until(
        lambda: showing(second),
        timeout=TIMEOUT,
        what="the update after a reload",
    )
    assert text.index(second) < text.index(first)  # newest first
