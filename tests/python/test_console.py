"""The web console in a real browser (headless Chromium driven by Selenium): log in with the
admin key, find a value and see who saw it with its hourly chart, watch a peer's counters
move, create a key, and be refused after logging out. Screenshots of the main pages are
written to $SIGHTHUB_CONSOLE_SHOTS when set (docs/console/ holds the committed ones)."""

import json
import os
import shutil
import time
import uuid
from pathlib import Path

import pytest
import requests
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

ORG_A = str(uuid.uuid4())
ORG_B = str(uuid.uuid4())
B_KEY = "a-pushes-to-b-0123456789"


def chromium():
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not binary or not driver:
        pytest.fail("chromium and chromedriver are needed (scripts/test setup installs them)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--ignore-certificate-errors",
              "--window-size=1280,900", "--disable-dev-shm-usage"):
        opts.add_argument(a)
    return webdriver.Chrome(service=Service(driver), options=opts)


@pytest.fixture
def browser():
    b = chromium()
    yield b
    b.quit()


def wait(b, cond, timeout=20):
    return WebDriverWait(b, timeout).until(cond)


def text_of(b, css):
    return [e.text for e in b.find_elements(By.CSS_SELECTOR, css)]


def test_console_login_search_chart_peer_counters_keys_and_logout(start_server, browser, tmp_path, monkeypatch):
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    b_srv = start_server(
        config=f'[exchange]\norg = "{ORG_B}"\n\n[bridge]\nenabled = false\n\n'
        f'[exchange.keys."{B_KEY}"]\norg = "{ORG_A}"\npublish = ["*"]\nrelay = true\n'
    )
    a = start_server(
        config=f'[exchange]\norg = "{ORG_A}"\n\n[relay]\nretry_min_ms = 50\nretry_max_ms = 500\n\n'
        f'[[relay.peers]]\nname = "org-b"\nurl = "{b_srv.url}"\nkey = "{B_KEY}"\naccept_invalid_certs = true\n'
    )
    shots = Path(os.environ.get("SIGHTHUB_CONSOLE_SHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    auth = {"Authorization": a.key}
    now = int(time.time())
    for ns, ts in (("feeds/scanners", now - 7200), ("feeds/scanners", now - 3600), ("feeds/c2", now)):
        r = requests.get(f"{a.url}/w/{ns}", params={"val": "198.51.100.9", "timestamp": ts}, headers=auth, verify=False)
        assert r.status_code == 200, r.text

    b = browser
    b.get(f"{a.url}/_management/")
    wait(b, EC.visibility_of_element_located((By.ID, "login-key")))
    b.find_element(By.ID, "login-key").send_keys("not-the-key")
    b.find_element(By.CSS_SELECTOR, "#login-form button").click()
    wait(b, EC.text_to_be_present_in_element((By.ID, "login-error"), "not the admin key"))

    b.find_element(By.ID, "login-key").send_keys(a.key)
    b.find_element(By.CSS_SELECTOR, "#login-form button").click()
    wait(b, EC.visibility_of_element_located((By.ID, "search-value")))
    cookies = {c["name"]: c for c in b.get_cookies()}
    session = cookies["sighthub_session"]
    assert session["httpOnly"] and session["secure"] and session["sameSite"] == "Strict"

    # Who saw this value, and its chart.
    b.find_element(By.ID, "search-value").send_keys("198.51.100.9")
    b.find_element(By.CSS_SELECTOR, "#search-form button").click()
    wait(b, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#who-table tbody tr")) == 2)
    assert sorted(r.split(" ")[0] for r in text_of(b, "#who-table tbody tr")) == ["feeds/c2", "feeds/scanners"]
    assert "consensus 2" in b.find_element(By.ID, "search-summary").text
    wait(b, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#chart rect.bar")) == 3)
    b.save_screenshot(str(shots / "search.png"))

    # A peer's counters move while the page is open.
    b.get(f"{a.url}/_management/#peers")
    wait(b, lambda d: "org-b" in " ".join(text_of(d, "#links-table tbody tr")))

    def sent():
        cells = b.find_elements(By.CSS_SELECTOR, "#links-table tbody tr td")
        return int(cells[2].text) if len(cells) > 2 and cells[2].text.isdigit() else -1

    before = sent()
    for i in range(3):
        msg = {"format": "intelmq", "version": 1, "type": "event",
               "meta": {"uuid": str(uuid.uuid4()), "uuid_org": ORG_A},
               "payload": {"source.ip": f"203.0.113.{i + 1}", "raw": "eA=="}}
        r = requests.post(f"{a.url}/iep04/messages", json=msg, headers=auth, verify=False)
        assert r.status_code == 200, r.text
    wait(b, lambda d: sent() >= before + 3, timeout=30)
    b.save_screenshot(str(shots / "peers.png"))

    b.get(f"{a.url}/_management/#exchange")
    wait(b, lambda d: "Log head" in d.find_element(By.ID, "exchange-facts").text)
    wait(b, lambda d: "relay/push/org-b" in d.find_element(By.ID, "consumers-table").text)
    b.save_screenshot(str(shots / "exchange.png"))

    # Keys: create one, see it listed (its secret shown once).
    b.get(f"{a.url}/_management/#keys")
    wait(b, EC.visibility_of_element_located((By.ID, "key-name")))
    b.find_element(By.ID, "key-name").send_keys("misp")
    b.find_element(By.ID, "key-sightings").send_keys("r:feeds")
    b.find_element(By.CSS_SELECTOR, "#key-form button").click()
    wait(b, EC.presence_of_element_located((By.CSS_SELECTOR, "#key-result output.secret")))
    secret = b.find_element(By.CSS_SELECTOR, "#key-result output.secret").text
    assert requests.get(f"{a.url}/r/feeds/c2", params={"val": "198.51.100.9"},
                        headers={"Authorization": secret}, verify=False).status_code == 200
    wait(b, lambda d: "misp" in d.find_element(By.ID, "keys-table").text)
    b.save_screenshot(str(shots / "keys.png"))

    b.get(f"{a.url}/_management/#config")
    wait(b, lambda d: "expires" in d.find_element(By.ID, "tls-expiry").text)
    config_text = b.find_element(By.ID, "config-json").text
    assert B_KEY not in config_text and a.key not in config_text, "secrets are masked"
    b.save_screenshot(str(shots / "config.png"))

    # The session cookie without the CSRF token is refused, even for a read.
    status = b.execute_async_script(
        "const done = arguments[0];"
        "fetch('/_api/keys', {credentials: 'same-origin'}).then(r => done(r.status));"
    )
    assert status == 401

    # Log out: the login form comes back, and the old session no longer works.
    b.find_element(By.ID, "logout").click()
    wait(b, EC.visibility_of_element_located((By.ID, "login-key")))
    r = requests.get(f"{a.url}/_api/keys", cookies={"sighthub_session": session["value"]},
                     headers={"X-CSRF-Token": "x"}, verify=False)
    assert r.status_code == 401
    b.get(f"{a.url}/_management/#search")
    wait(b, EC.visibility_of_element_located((By.ID, "login-key")))
    assert not b.find_element(By.ID, "nav").is_displayed()
