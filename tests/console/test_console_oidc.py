"""Signing in to the console at the OIDC issuer in a real browser: the console's link, the issuer's page, and
back with a session (authorization code + PKCE; the test issuer's sign-in page stands in for the IdP's)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import Select, WebDriverWait

from tests.api_harness import ApiGateway, api_gateway
from tests.console.conftest import BROWSER_NEEDED
from tests.helpers import MosquittoProcess, SimulatorProcess, free_port

pytestmark = BROWSER_NEEDED


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, mosquitto: MosquittoProcess) -> Iterator[ApiGateway]:
    with SimulatorProcess(free_port(), 2, ["--sim-time", "12:00"]) as sim:
        yield from api_gateway(
            tmp_path_factory.mktemp("console-oidc"), mosquitto.port, sim.port, devices=2,
            oidc_settings='client_id = "edge-console"',
        )  # fmt: skip


def test_a_person_signs_in_at_the_issuer_and_sees_the_tenants_devices(
    browser: WebDriver, api: ApiGateway
) -> None:
    wait = WebDriverWait(browser, 15, poll_frequency=0.1)
    browser.delete_all_cookies()
    browser.get(api.base_url + "/console/")
    wait.until(EC.element_to_be_clickable((By.ID, "oidc-signin"))).click()
    Select(wait.until(EC.visibility_of_element_located((By.ID, "identity")))).select_by_value("globex:viewer")
    browser.find_element(By.ID, "subject").send_keys("maria")
    browser.find_element(By.ID, "approve").click()
    wait.until(EC.text_to_be_present_in_element((By.ID, "who"), "maria (viewer, globex)"))
    browser.get(api.base_url + "/console/#/devices")
    wait.until(EC.text_to_be_present_in_element((By.ID, "devices"), "inv-02"))
    assert "inv-01" not in browser.find_element(By.ID, "devices").text
