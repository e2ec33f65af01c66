"""The console in a real browser: Debian's chromium, headless, driven by Selenium through /usr/bin/chromedriver.

One gateway for the module and one browser for the session (tests/console/conftest.py): the Modbus
inverter simulator gives acme inv-01 and globex inv-02, the BACnet HVAC simulator's VAV box acme vav-1, a
SunSpec device simulator waits to be discovered, and the alarms module raises an alarm on inv-01 at once. `EDGE_CONSOLE_SCREENSHOTS=docs/console` saves a
PNG of each page (docs/console.md).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from standardwebhooks.webhooks import Webhook
from typer.testing import CliRunner

from edge.cli import app
from simulators.bacnet_hvac import HvacSimulator
from simulators.webhook_receiver import WebhookReceiver
from tests.api_harness import LocalGateway, LoopThread, local_gateway
from tests.console.conftest import BROWSER_NEEDED
from tests.helpers import MosquittoProcess, SimulatorProcess, free_port, free_udp_port, wait_port

pytestmark = BROWSER_NEEDED
from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.support import expected_conditions as EC  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

PASSWORD = "correct horse battery"
ALARMS = """
[[modules]]
name = "alarms"
[modules.config]
check_interval = 0.2
rules = [{ id = "low-output", point = "ac_power", devices = "inv-01", low = 1e12, severity = "minor" }]

[webhooks]
allow_networks = ["127.0.0.1/32"]  # the test's receiver
retry_initial = 0.1
"""
HVAC_IP = "127.0.9.40"  # the simulated AHU; its VAV box is on .41
SHOTS = os.environ.get("EDGE_CONSOLE_SCREENSHOTS")


def _vav_device(hvac: HvacSimulator) -> str:
    vav = hvac.vavs[0]
    return (
        f'\n[[devices]]\nname = "vav-1"\ndriver = "bacnet"\ntenant = "acme"\nsite = "roof"\nprofile = "vav"\n'
        f'poll_interval = 0.3\ntimeout = 0.5\nmode = "poll"\nconnection = {{ address = "{vav.address}", '
        f'device_instance = {vav.instance}, local_address = "127.0.0.1/8:{free_udp_port()}" }}\n'
    )


@pytest.fixture(scope="module")
def hvac() -> Iterator[HvacSimulator]:
    """bacpypes3 devices on a loop of their own, as a separate controller would be."""
    loop = LoopThread()
    simulator = HvacSimulator(1, HVAC_IP, free_udp_port(HVAC_IP), update_interval=0.5)
    loop.run(simulator.start())
    try:
        yield simulator
    finally:
        loop.run(simulator.stop())
        loop.close()


@pytest.fixture(scope="module")
def meter_port() -> Iterator[int]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "simulators.sunspec_device", "--port", str(port)], stdout=subprocess.DEVNULL
    )
    try:
        wait_port(port, 20)
        yield port
    finally:
        proc.kill()
        proc.wait(5)


@pytest.fixture(scope="module")
def site(
    tmp_path_factory: pytest.TempPathFactory, mosquitto: MosquittoProcess, hvac: HvacSimulator
) -> Iterator[LocalGateway]:
    with SimulatorProcess(free_port(), 2, ["--sim-time", "12:00"]) as sim:
        yield from local_gateway(
            tmp_path_factory.mktemp("console"),
            mosquitto.port,
            sim.port,
            (("alice", PASSWORD, "operator", "acme"), ("root", PASSWORD, "admin", None)),
            devices=2,
            more_config=ALARMS + _vav_device(hvac),
            entitlements=("alarms",),
        )


@pytest.fixture(scope="module")
def receiver(site: LocalGateway) -> Iterator[WebhookReceiver]:
    hook = WebhookReceiver()
    site.loop.run(hook.start())
    try:
        yield hook
    finally:
        site.loop.run(hook.stop())


def _wait(browser: WebDriver, timeout: float = 15) -> WebDriverWait[WebDriver]:
    # an element the page re-rendered between finding it and reading it is found again on the next poll
    return WebDriverWait(
        browser, timeout, poll_frequency=0.1, ignored_exceptions=(StaleElementReferenceException,)
    )


def _shot(browser: WebDriver, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(Path(SHOTS) / f"{name}.png"))


def _sign_in(browser: WebDriver, site: LocalGateway, user: str) -> None:
    browser.delete_all_cookies()
    browser.get(site.base_url + "/console/")
    _wait(browser).until(EC.visibility_of_element_located((By.ID, "username"))).send_keys(user)
    browser.find_element(By.ID, "password").send_keys(PASSWORD)
    if SHOTS and user == "alice":
        _shot(browser, "sign-in")
    browser.find_element(By.ID, "signin").click()
    _wait(browser).until(EC.text_to_be_present_in_element((By.ID, "who"), user))


def _open(browser: WebDriver, site: LocalGateway, page: str) -> None:
    browser.get(f"{site.base_url}/console/#/{page}")


def _confirm(browser: WebDriver) -> None:
    _wait(browser).until(EC.element_to_be_clickable((By.ID, "confirm-ok"))).click()


def test_sign_in_then_the_overview_shows_the_tenants_sites(browser: WebDriver, site: LocalGateway) -> None:
    browser.get(site.base_url + "/")  # the gateway's root leads to the console
    _wait(browser).until(EC.visibility_of_element_located((By.ID, "signin-form")))
    browser.find_element(By.ID, "username").send_keys("alice")
    browser.find_element(By.ID, "password").send_keys("wrong password")
    browser.find_element(By.ID, "signin").click()
    _wait(browser).until(EC.text_to_be_present_in_element((By.CSS_SELECTOR, ".error"), "wrong account name"))
    _sign_in(browser, site, "alice")
    _wait(browser).until(EC.text_to_be_present_in_element((By.ID, "sites"), "roof"))
    _wait(browser).until(lambda b: b.find_element(By.ID, "points-rate").text not in ("", "…"))
    assert "tenant acme" in browser.find_element(By.ID, "main").text
    _shot(browser, "overview")


def test_live_values_history_and_a_confirmed_write(browser: WebDriver, site: LocalGateway) -> None:
    _open(browser, site, "device/inv-01")
    _wait(browser).until(EC.text_to_be_present_in_element((By.ID, "live-state"), "live"))
    cell = (By.CSS_SELECTOR, 'tr[data-point="ac_power"] td.value')
    first = _wait(browser).until(
        lambda b: b.find_element(*cell).text not in ("", "—") and b.find_element(*cell).text
    )
    _wait(browser).until(lambda b: b.find_element(*cell).text != first)  # pushed over the WebSocket
    row = browser.find_element(By.CSS_SELECTOR, 'tr[data-point="ac_power"]')
    assert row.text.split()[2:4] == ["W", "good"]
    row.find_element(By.XPATH, ".//button[text()='History']").click()
    path = _wait(browser).until(EC.presence_of_element_located((By.CSS_SELECTOR, "#chart svg path")))
    assert int(path.get_attribute("data-samples") or 0) > 1
    _shot(browser, "device")
    browser.find_element(By.CSS_SELECTOR, 'tr[data-point="power_limit"] button.write').click()
    prompt = _wait(browser).until(EC.alert_is_present())
    prompt.send_keys("55")
    prompt.accept()
    _wait(browser).until(EC.text_to_be_present_in_element((By.ID, "confirm-text"), "Write 55"))
    _confirm(browser)
    _wait(browser).until(EC.text_to_be_present_in_element((By.ID, "write-result"), "wrote 55 to power_limit"))
    value = (By.CSS_SELECTOR, 'tr[data-point="power_limit"] td.value')
    _wait(browser).until(EC.text_to_be_present_in_element(value, "55"))  # read back from the device


def test_a_write_the_device_took_with_a_remark_shows_the_remark(
    browser: WebDriver, site: LocalGateway, hvac: HvacSimulator
) -> None:
    """The VAV box applies the write, then answers an error: the result says so and what priority 8 holds."""
    _open(browser, site, "device/vav-1")
    value = (By.CSS_SELECTOR, 'tr[data-point="zone-temp-setpoint"] td.value')
    _wait(browser).until(lambda b: b.find_element(*value).text not in ("", "—"))
    hvac.set_fault("vav-1", write_error=True)
    try:
        browser.find_element(By.CSS_SELECTOR, 'tr[data-point="zone-temp-setpoint"] button.write').click()
        prompt = _wait(browser).until(EC.alert_is_present())
        prompt.send_keys("23.5")
        prompt.accept()
        _confirm(browser)
        result = (By.ID, "write-result")
        _wait(browser).until(EC.text_to_be_present_in_element(result, "wrote 23.5 to zone-temp-setpoint"))
        note = _wait(browser).until(EC.visibility_of_element_located((By.ID, "write-note"))).text
    finally:
        hvac.set_fault("vav-1", write_error=False)
    assert note.startswith("; the device answered bacnet error device: operational-problem")
    assert "but holds the value written (priority 8 holds 23.5" in note
    assert hvac.vavs[0].priority_array("zone-temp-setpoint")[7] == 23.5  # the device did apply it
    _wait(browser).until(EC.text_to_be_present_in_element(value, "23.5"))  # and it reads back


def test_commissioning_a_discovered_device_until_its_values_arrive_live(
    browser: WebDriver, site: LocalGateway, meter_port: int
) -> None:
    _open(browser, site, "commission")
    targets = _wait(browser).until(EC.visibility_of_element_located((By.ID, "targets")))
    targets.clear()
    targets.send_keys(f"host=127.0.0.1\nport={meter_port}\nunits=1-2")
    browser.find_element(By.ID, "discover").click()
    _wait(browser, 30).until(EC.text_to_be_present_in_element((By.ID, "progress"), "found 1 device(s)"))
    form = browser.find_element(By.CSS_SELECTOR, "form.add-device")
    name = form.find_element(By.CSS_SELECTOR, ".device-name")
    name.clear()
    name.send_keys("meter-new")
    form.find_element(By.CSS_SELECTOR, ".device-site").send_keys("roof")
    first_point = browser.find_element(By.CSS_SELECTOR, "input.point-name")
    proposed = first_point.get_attribute("data-proposed")
    first_point.clear()
    first_point.send_keys("renamed_point")
    _shot(browser, "commissioning")
    form.find_element(By.CSS_SELECTOR, "button.add").click()
    _wait(browser).until(EC.url_contains("#/device/meter-new"))
    _wait(browser).until(EC.text_to_be_present_in_element((By.ID, "live-state"), "live"))
    cell = (By.CSS_SELECTOR, 'tr[data-point="renamed_point"] td.value')
    _wait(browser, 20).until(lambda b: b.find_element(*cell).text not in ("", "—"))
    text = site.config.read_text()  # the configuration file is the source of truth, and kept its content
    assert 'name = "meter-new"' in text and 'profile = "profiles/meter-new.toml"' in text
    profile = (site.config.parent / "profiles" / "meter-new.toml").read_text()
    assert 'name = "renamed_point"' in profile and f'name = "{proposed}"' not in profile


def test_an_alarm_is_acknowledged_from_the_list(browser: WebDriver, site: LocalGateway) -> None:
    _open(browser, site, "alarms")
    row = (By.CSS_SELECTOR, 'tr[data-alarm^="low-output:roof/inv-01"]')
    _wait(browser, 20).until(EC.presence_of_element_located(row))
    _shot(browser, "alarms")
    browser.find_element(*row).find_element(By.CSS_SELECTOR, "button.ack").click()
    _confirm(browser)
    _wait(browser, 20).until(EC.text_to_be_present_in_element(row, "acknowledged by alice"))


def test_another_tenants_device_is_not_reachable_by_url(browser: WebDriver, site: LocalGateway) -> None:
    _open(browser, site, "device/inv-02")
    error = _wait(browser).until(EC.visibility_of_element_located((By.CSS_SELECTOR, ".error")))
    assert "tenant 'acme' has no device 'inv-02'" in error.text
    _open(browser, site, "devices")
    _wait(browser).until(EC.text_to_be_present_in_element((By.ID, "devices"), "inv-01"))
    assert "inv-02" not in browser.find_element(By.ID, "devices").text
    _shot(browser, "devices")
    assert browser.find_element(By.ID, "nav-tenants").is_displayed() is False
    cookie = browser.get_cookie("edge_session")
    assert cookie is not None and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    with httpx.Client(base_url=site.base_url, cookies={"edge_session": cookie["value"]}) as http:
        assert http.get("/v1/tenants").status_code == 403
        page = http.get("/console/")  # its own scripts and origin only, never framed
        policy = page.headers["content-security-policy"]
        assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy
        assert page.headers["x-frame-options"] == "DENY"


def test_an_admin_creates_an_mqtt_user_whose_password_is_shown_once(
    browser: WebDriver, site: LocalGateway
) -> None:
    _sign_in(browser, site, "root")
    _open(browser, site, "tenants")
    section = _wait(browser).until(
        EC.visibility_of_element_located((By.CSS_SELECTOR, 'section[data-tenant="acme"]'))
    )
    section.find_element(By.CSS_SELECTOR, ".mqtt-name").send_keys("scada")
    section.find_element(By.CSS_SELECTOR, ".mqtt-create").click()
    secret = _wait(browser).until(
        lambda b: b.find_element(By.CSS_SELECTOR, 'section[data-tenant="acme"] .secret')
    )
    assert len(secret.text) >= 16
    _shot(browser, "tenants")


def _webhooks_of(site: LocalGateway, tenant: str) -> str:
    """`edge webhook list`: the CLI reads the same store the console's routes write."""
    listed = CliRunner().invoke(app, ["webhook", "list", "-t", tenant, "-c", str(site.config)])
    assert listed.exit_code == 0, listed.output
    return listed.output


def test_an_admin_adds_a_webhook_whose_secret_signs_its_deliveries_then_removes_it(
    browser: WebDriver, site: LocalGateway, receiver: WebhookReceiver
) -> None:
    _sign_in(browser, site, "root")
    _open(browser, site, "tenants")
    acme = 'section[data-tenant="acme"]'
    section = _wait(browser).until(EC.visibility_of_element_located((By.CSS_SELECTOR, acme)))
    section.find_element(By.CSS_SELECTOR, ".webhook-url").send_keys(receiver.url)
    section.find_element(By.CSS_SELECTOR, ".webhook-types").send_keys("org.edgegw.telemetry")
    section.find_element(By.CSS_SELECTOR, ".webhook-add").click()
    shown = _wait(browser).until(
        EC.visibility_of_element_located((By.CSS_SELECTOR, f"{acme} .webhook-secret .secret"))
    )
    secret = shown.text
    row = browser.find_element(By.CSS_SELECTOR, f"{acme} tr[data-webhook]")
    subscription = row.get_attribute("data-webhook") or ""
    assert secret.startswith("whsec_") and subscription.startswith("wh_")
    assert receiver.url in row.text and "org.edgegw.telemetry" in row.text
    _shot(browser, "tenants-webhook")
    assert subscription in _webhooks_of(site, "acme") and subscription not in _webhooks_of(site, "globex")

    # acme's telemetry arrives, signed with the secret the page showed (checked by the standardwebhooks library)
    delivered = _wait(browser, 20).until(lambda _: receiver.accepted())
    verifier = Webhook(secret)
    payload = verifier.verify(delivered[0].body, delivered[0].headers)
    assert payload["type"] == "org.edgegw.telemetry" and payload["tenantid"] == "acme"

    browser.refresh()  # shown once: a new visit lists the webhook, not its secret
    row = _wait(browser).until(
        EC.visibility_of_element_located((By.CSS_SELECTOR, f'{acme} tr[data-webhook="{subscription}"]'))
    )
    assert secret not in browser.find_element(By.ID, "main").text
    row.find_element(By.CSS_SELECTOR, ".webhook-remove").click()
    _wait(browser).until(EC.text_to_be_present_in_element((By.ID, "confirm-text"), subscription))
    _confirm(browser)
    _wait(browser).until(
        EC.text_to_be_present_in_element((By.CSS_SELECTOR, f"{acme} .webhook-secret"), "Removed")
    )
    assert not browser.find_elements(By.CSS_SELECTOR, f'tr[data-webhook="{subscription}"]')
    assert subscription not in _webhooks_of(site, "acme")
