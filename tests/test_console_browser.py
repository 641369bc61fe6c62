"""The web console in a real browser: a person signs in, uploads, publishes and yanks a build, each role sees
the pages it may use and is refused the others, and every page is accessible, fits a phone and breaks no rule
of its Content-Security-Policy.

Headless chromium (tests/support/browser.py) against the session's fwrepo on SQLite only: the console reads
and acts through the same domain as the API, whose tests run on both databases, and a browser test is slow.
Screenshots of the main pages are taken on every run; with FWREPO_CONSOLE_SCREENSHOTS=1 they are written to
docs/console/ (committed, for the documentation), else to a temporary directory, so that a test run leaves the
committed ones alone:

    FWREPO_CONSOLE_SCREENSHOTS=1 .venv/bin/pytest -p no:cacheprovider tests/test_console_browser.py
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement

from tests.support.browser import (  # noqa: F401  (browser and chromium are fixtures)
    SCREENSHOTS,
    axe_violations,
    browser,
    chromium,
    console_errors,
    describe_violations,
    gone,
    phone_width,
    screenshot,
    trust_ca,
    wait_until,
)
from tests.support.builds import published_build, unique_vendor, upload
from tests.support.console import PASSWORD, make_users, sign_in
from tests.support.fwrepo import TEST_MAX_UPLOAD, Fwrepo

# The console's pages are the same on both databases: the browser runs against SQLite only.
pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

# Big enough that the browser reports the upload's progress several times before it is sent; under the test
# server's upload limit (tests/support/fwrepo.py: 48 MiB).
UPLOAD_BYTES = 40 * 1024 * 1024
UPLOAD_RATE = 20 * 1024 * 1024
# The statuses the tests get pages with on purpose (a refusal, a wrong password, a missing build), whose loads
# chromium logs as errors.
EXPECTED_STATUSES = (401, 403, 404, 409, 413, 422, 429)
PROGRESS_VALUE = "return document.querySelector('#upload-progress progress').value"


# -- helpers ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where this run's screenshots go: docs/console/ when asked to update them, else a temporary directory."""
    return SCREENSHOTS if os.environ.get("FWREPO_CONSOLE_SCREENSHOTS") == "1" else tmp_path_factory.mktemp("screens")


@pytest.fixture(autouse=True)
def no_console_errors_left(browser: WebDriver) -> Iterator[None]:  # noqa: F811 (a fixture)
    """After each test: no console error (a CSP violation, a script error) on any page it visited that it did
    not look at itself, but for the loads of pages refused on purpose; and the browser leaves the last page, so
    that a campaign's page does not keep polling the server while other tests run."""
    yield
    left = errors_but_status(browser, *EXPECTED_STATUSES)
    origin = browser.execute_script("return window.location.origin")
    if origin.startswith("https://"):  # as the browser fixture does after the test, which finds about:blank
        browser.execute_cdp_cmd("Storage.clearDataForOrigin", {"origin": origin, "storageTypes": "all"})
    browser.get("about:blank")
    assert left == [], f"console errors: {left}"


@pytest.fixture(scope="module")
def people(fwrepo: Fwrepo) -> dict[str, str]:
    """This module's console users, one per role, made at once (a `fwrepo users create` each takes seconds)."""
    return make_users(fwrepo, {role: role for role in ("release", "csms", "admin", "platform")})


def visit(driver: WebDriver, fwrepo: Fwrepo, path: str) -> None:
    trust_ca(driver, fwrepo.ca)  # before the first visit to the server (done once per browser)
    driver.get(fwrepo.url + path)


def heading(driver: WebDriver) -> str:
    return driver.find_element(By.TAG_NAME, "h1").text


def message(driver: WebDriver) -> str:
    found = driver.find_elements(By.CSS_SELECTOR, "main .message")
    return found[0].text if found else ""


def menu(driver: WebDriver) -> list[str]:
    """The main navigation's links, as shown."""
    return [link.text for link in driver.find_elements(By.CSS_SELECTOR, "header nav[aria-label=Main] a")]


def click_and_wait(driver: WebDriver, element: WebElement) -> None:
    """Click what submits a form or follows a link, and wait for the next page."""
    old = driver.find_element(By.TAG_NAME, "html")
    element.click()
    wait_until(driver, gone(old), 30)
    wait_until(driver, lambda d: d.execute_script("return document.readyState") == "complete", 30)


def button(driver: WebDriver, text: str) -> WebElement:
    return driver.find_element(By.XPATH, f"//main//button[normalize-space()={xpath_string(text)}]")


def link(driver: WebDriver, text: str) -> WebElement:
    return driver.find_element(By.XPATH, f"//main//a[normalize-space()={xpath_string(text)}]")


def xpath_string(text: str) -> str:
    assert "'" not in text
    return f"'{text}'"


def errors_but_status(driver: WebDriver, *statuses: int) -> list[dict]:
    """The console's errors, less the one chromium logs for a page answered with an error status on purpose."""
    return [entry for entry in console_errors(driver)
            if not (entry.get("source") == "network" and any(f"status of {status}" in entry.get("message", "")
                                                              for status in statuses))]


def assert_clean(driver: WebDriver, *, axe: bool = True, statuses: tuple[int, ...] = ()) -> None:
    """No console errors (CSP violations among them) since the last look and, with axe, no WCAG A/AA violation."""
    errors = errors_but_status(driver, *statuses)
    assert errors == [], f"{driver.current_url}: {errors}"
    if axe:
        violations = axe_violations(driver)
        assert violations == [], f"{driver.current_url}:\n{describe_violations(violations)}"


def random_image(tmp_path: Path, size: int, name: str = "firmware.bin") -> Path:
    path = tmp_path / name
    with path.open("wb") as out:
        left = size
        while left:
            chunk = min(left, 4 * 1024 * 1024)
            out.write(os.urandom(chunk))
            left -= chunk
    return path


# Records every value the upload's <progress> shows, in sessionStorage: it outlives the navigation to the
# build page that ends the upload, and a MutationObserver misses no progress event as polling would.
WATCH_PROGRESS = """
const box = document.getElementById('upload-progress');
const bar = box.querySelector('progress'), text = box.querySelector('.progress-text');
sessionStorage.setItem('progress', '[]');
new MutationObserver(() => {
  const seen = JSON.parse(sessionStorage.getItem('progress'));
  seen.push([bar.value, text.textContent]);
  sessionStorage.setItem('progress', JSON.stringify(seen));
}).observe(text, {childList: true, characterData: true, subtree: true});
"""


# -- tests --------------------------------------------------------------------------------


def test_a_release_engineer_uploads_publishes_and_yanks_a_build(
        browser: WebDriver, fwrepo: Fwrepo, people: dict[str, str], screenshots: Path, tmp_path: Path,  # noqa: F811 (a fixture)
) -> None:
    name = people["release"]
    vendor = unique_vendor()
    image = random_image(tmp_path, UPLOAD_BYTES)

    sign_in(browser, fwrepo, name, next_path="/console/firmware/upload")
    assert heading(browser) == "Upload a build"
    form = browser.find_element(By.ID, "upload")
    form.find_element(By.ID, "vendor").send_keys(vendor)
    form.find_element(By.ID, "models").send_keys("AC22, AC11")
    form.find_element(By.ID, "version").send_keys("2.0.0")
    form.find_element(By.ID, "release_notes").send_keys("Faster boot.")
    form.find_element(By.ID, "file").send_keys(str(image))
    screenshot(browser, "upload", screenshots)
    browser.execute_script(WATCH_PROGRESS)
    old = browser.find_element(By.TAG_NAME, "html")
    # The browser sends at most UPLOAD_RATE bytes a second: the upload takes a few seconds whatever the
    # machine, time to see the bar mid-way (the server itself is not slowed).
    browser.set_network_conditions(latency=0, download_throughput=-1, upload_throughput=UPLOAD_RATE)
    try:
        form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        wait_until(browser, lambda d: 5 < d.execute_script(PROGRESS_VALUE) < 80, 30)
        screenshot(browser, "upload-progress", screenshots)
        wait_until(browser, gone(old), 120)
    finally:
        browser.delete_network_conditions()
    wait_until(browser, lambda d: "/console/firmware/" in d.current_url and heading(d).startswith(vendor), 30)

    seen = browser.execute_script("return JSON.parse(sessionStorage.getItem('progress') || '[]')")
    moving = [value for value, _ in seen if 0 < value < 100]
    assert moving, f"the progress bar never showed a share between 0 and 100: {seen}"
    assert len({text for _, text in seen}) >= 3, seen
    assert heading(browser) == f"{vendor} 2.0.0 uploaded"
    assert f"({UPLOAD_BYTES} bytes)" in browser.find_element(By.CSS_SELECTOR, "dl.facts").text
    assert_clean(browser)

    click_and_wait(browser, link(browser, "Publish…"))
    assert heading(browser) == f"Publish {vendor} 2.0.0?"
    click_and_wait(browser, button(browser, "Publish 2.0.0"))
    assert heading(browser) == f"{vendor} 2.0.0 published"
    manifest = link(browser, "Download the signed manifest")
    assert manifest.get_attribute("href").endswith("/manifest")
    # What the link downloads, fetched as the page would (with the session's cookie).
    signed = browser.execute_async_script(
        "fetch(arguments[0]).then(r => r.json()).then(arguments[1], e => arguments[1](String(e)))",
        manifest.get_attribute("href"))
    assert signed["manifest"]["vendor"] == vendor and signed["manifest"]["size"] == UPLOAD_BYTES, signed
    assert signed["signature"] and "BEGIN CERTIFICATE" in signed["signing_certificate"]
    assert "Not signed yet" not in browser.find_element(By.ID, "main").text
    assert_clean(browser, axe=False)

    click_and_wait(browser, link(browser, "Yank…"))
    assert heading(browser) == f"Yank {vendor} 2.0.0?"
    browser.find_element(By.ID, "reason").send_keys("Bricks AC11 units with an old bootloader")
    click_and_wait(browser, button(browser, "Yank 2.0.0"))
    assert heading(browser) == f"{vendor} 2.0.0 yanked"
    history = browser.find_element(By.CSS_SELECTOR, "ol.timeline").text
    assert "publish by" in history and "yank by" in history, history
    assert "Bricks AC11 units with an old bootloader" in history, history
    assert_clean(browser, axe=False)


def sign_out(driver: WebDriver) -> None:
    click_and_wait(driver, driver.find_element(By.XPATH, "//header//button[normalize-space()='Sign out']"))
    assert heading(driver) == "Sign in"


REFUSED = "That did not work"


def assert_refused(driver: WebDriver, fwrepo: Fwrepo, role: str, *paths: str) -> None:
    """Each page, opened by its URL, is the refusal page naming the role."""
    for path in paths:
        visit(driver, fwrepo, path)
        assert heading(driver) == REFUSED, path
        assert driver.title.startswith("Refused"), path
        assert f"role {role} may not" in message(driver), (path, message(driver))


def assert_opens(driver: WebDriver, fwrepo: Fwrepo, pages: dict[str, str]) -> None:
    """Each page (path: the start of its heading) opens."""
    for path, title in pages.items():
        visit(driver, fwrepo, path)
        assert heading(driver).startswith(title), (path, heading(driver))


def test_an_image_over_the_upload_limit_is_refused_beside_the_form_saying_why(
        browser: WebDriver, fwrepo: Fwrepo, people: dict[str, str], tmp_path: Path,  # noqa: F811 (a fixture)
) -> None:
    vendor = unique_vendor()
    sign_in(browser, fwrepo, people["release"], next_path="/console/firmware/upload")
    for field, value in (("vendor", vendor), ("models", "AC22"), ("version", "1.0.0"),
                         ("file", str(random_image(tmp_path, TEST_MAX_UPLOAD + 1024 * 1024)))):
        browser.find_element(By.ID, field).send_keys(value)
    browser.find_element(By.CSS_SELECTOR, "#upload button[type=submit]").click()
    refusal = wait_until(browser, lambda d: d.find_element(By.ID, "upload-error").text, 60)
    assert f"larger than the {TEST_MAX_UPLOAD} bytes" in refusal, refusal
    assert browser.find_element(By.CSS_SELECTOR, "#upload button[type=submit]").is_enabled()  # to try again
    with fwrepo.client("release") as release:
        assert release.get("/api/v1/firmware", params={"vendor": vendor}).json()["total"] == 0


def test_each_role_sees_the_pages_it_may_use_and_is_refused_the_others(
        browser: WebDriver, fwrepo: Fwrepo, people: dict[str, str],  # noqa: F811 (a fixture)
) -> None:
    with fwrepo.client("release") as release:
        build = upload(release, unique_vendor(), "1.0.0").json()
    publish, yank = f"/console/firmware/{build['id']}/publish", f"/console/firmware/{build['id']}/yank"
    # One page of each kind a role may not use (the pages of a kind share their permission).
    operations = ("/console/campaigns", "/console/chargers?id=CP-1")
    administration = ("/console/audit", "/console/users")

    sign_in(browser, fwrepo, people["release"])
    assert menu(browser) == ["Builds", "Upload", "Keys"]
    visit(browser, fwrepo, f"/console/firmware/{build['id']}")
    assert link(browser, "Publish…") and link(browser, "Yank…")
    assert not browser.find_elements(By.ID, "deliveries")
    assert_refused(browser, fwrepo, "release", *operations, *administration, "/console/tenants")
    sign_out(browser)

    sign_in(browser, fwrepo, people["csms"])
    assert menu(browser) == ["Builds", "Campaigns", "Chargers", "Keys"]
    visit(browser, fwrepo, f"/console/firmware/{build['id']}")
    assert not browser.find_elements(By.XPATH, "//main//a[normalize-space()='Publish…' or normalize-space()='Yank…']")
    assert browser.find_element(By.ID, "deliveries")  # grants and downloads: the CSMS's business
    assert_opens(browser, fwrepo, {"/console/campaigns": "Campaigns", "/console/chargers": "Chargers",
                                   "/console/keys": "Keys"})
    assert_refused(browser, fwrepo, "csms", "/console/firmware/upload", publish, yank, *administration,
                   "/console/clients", "/console/tenants")
    assert_clean(browser, statuses=(403,))
    sign_out(browser)

    sign_in(browser, fwrepo, people["admin"])
    assert menu(browser) == ["Builds", "Upload", "Campaigns", "Chargers", "Audit", "Keys", "Users", "API clients"]
    assert_opens(browser, fwrepo, {"/console/firmware/upload": "Upload", publish: "Publish",
                                   "/console/chargers": "Chargers", "/console/audit": "Audit trail",
                                   "/console/clients": "API clients of tenant default"})
    assert_refused(browser, fwrepo, "admin", "/console/tenants")
    sign_out(browser)

    sign_in(browser, fwrepo, people["platform"])
    assert menu(browser) == ["Builds", "Audit", "Keys", "Tenants"]
    assert_opens(browser, fwrepo, {"/console/tenants": "Tenants", "/console/audit": "Audit trail"})
    assert_refused(browser, fwrepo, "platform", "/console/firmware/upload", *operations, "/console/users")
    with fwrepo.client("release") as release:
        assert release.get(f"/api/v1/firmware/{build['id']}").json()["status"] == "uploaded"


def test_a_wrong_password_and_a_form_without_its_csrf_token_are_refused(
        browser: WebDriver, fwrepo: Fwrepo, people: dict[str, str], tmp_path: Path,  # noqa: F811 (a fixture)
) -> None:
    # One wrong password is free: the same user signs in right after (tests/support/console.py's users
    # are the module's, and the other tests sign in as this one too).
    name = people["release"]
    with fwrepo.client("release") as release:
        build = upload(release, unique_vendor(), "1.0.0").json()

    sign_in(browser, fwrepo, name, "not the password at all", expect_success=False)
    assert heading(browser) == "Sign in"
    assert message(browser) == "Wrong name or password."
    assert browser.find_element(By.ID, "name").get_attribute("value") == name
    assert_clean(browser, statuses=(401,))

    # The sign-in form's token removed: refused before the password is looked at.
    visit(browser, fwrepo, "/console/login")
    browser.execute_script("document.querySelector('input[name=csrf]').remove()")
    browser.find_element(By.ID, "name").send_keys(name)
    browser.find_element(By.ID, "password").send_keys(PASSWORD)
    click_and_wait(browser, browser.find_element(By.CSS_SELECTOR, "main button[type=submit]"))
    assert "/console/login" in browser.current_url and heading(browser) == "Sign in"
    assert "CSRF token is missing or wrong" in message(browser)
    assert_clean(browser, axe=False, statuses=(403,))

    sign_in(browser, fwrepo, name)
    visit(browser, fwrepo, f"/console/firmware/{build['id']}/publish")
    browser.execute_script("document.querySelector('main input[name=csrf]').remove()")
    click_and_wait(browser, button(browser, "Publish 1.0.0"))
    assert heading(browser) == REFUSED
    assert "CSRF token is missing or wrong" in message(browser)

    visit(browser, fwrepo, f"/console/firmware/{build['id']}/yank")
    browser.execute_script("document.querySelector('main input[name=csrf]').value = 'forged'")
    browser.find_element(By.ID, "reason").send_keys("no token")
    click_and_wait(browser, button(browser, "Yank 1.0.0"))
    assert heading(browser) == REFUSED and "CSRF token is missing or wrong" in message(browser)

    # The upload's token removed: the script shows the refusal beside the form, and nothing is stored.
    vendor = unique_vendor()
    visit(browser, fwrepo, "/console/firmware/upload")
    browser.execute_script("document.querySelector('#upload input[name=csrf]').remove()")
    for field, value in (("vendor", vendor), ("models", "AC22"), ("version", "1.0.0"),
                         ("file", str(random_image(tmp_path, 100_000)))):
        browser.find_element(By.ID, field).send_keys(value)
    browser.find_element(By.CSS_SELECTOR, "#upload button[type=submit]").click()
    refusal = wait_until(browser, lambda d: d.find_element(By.ID, "upload-error").text, 30)
    assert "CSRF token is missing or wrong" in refusal
    assert "/console/firmware/upload" in browser.current_url
    assert_clean(browser, axe=False, statuses=(403,))

    with fwrepo.client("release") as release:
        assert release.get(f"/api/v1/firmware/{build['id']}").json()["status"] == "uploaded"
        assert release.get("/api/v1/firmware", params={"vendor": vendor}).json()["total"] == 0


def test_the_keyboard_skips_the_menu_to_the_page(
        browser: WebDriver, fwrepo: Fwrepo, people: dict[str, str],  # noqa: F811 (a fixture)
) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    sign_in(browser, fwrepo, people["release"])
    assert heading(browser) == "Builds"
    ActionChains(browser).send_keys(Keys.TAB).perform()
    skip = browser.switch_to.active_element
    assert skip.text == "Skip to content" and skip.get_attribute("href").endswith("#main")
    assert skip.location["x"] >= 0 and skip.is_displayed()  # shown once focused
    ActionChains(browser).send_keys(Keys.ENTER).perform()
    assert browser.switch_to.active_element.get_attribute("id") == "main"
    ActionChains(browser).send_keys(Keys.TAB).perform()  # on into the page, past the menu
    assert browser.switch_to.active_element.get_attribute("id") == "q"


def test_a_page_opened_before_signing_in_is_where_signing_in_leads_even_after_a_wrong_password(
        browser: WebDriver, fwrepo: Fwrepo, people: dict[str, str],  # noqa: F811 (a fixture)
) -> None:
    visit(browser, fwrepo, "/console/firmware/upload")
    assert heading(browser) == "Sign in"
    assert browser.current_url.endswith("/console/login?next=/console/firmware/upload")

    def submit(password: str) -> None:
        name = browser.find_element(By.ID, "name")
        name.clear()
        name.send_keys(people["release"])
        browser.find_element(By.ID, "password").send_keys(password)
        click_and_wait(browser, browser.find_element(By.CSS_SELECTOR, "main button[type=submit]"))

    submit("not the password at all")
    assert message(browser) == "Wrong name or password."
    kept = browser.find_element(By.CSS_SELECTOR, "input[name=next]").get_attribute("value")
    submit(PASSWORD)
    assert heading(browser) == "Upload a build", (
        f"signed in at {browser.current_url}: the sign-in form shown again after the wrong password had next="
        f"{kept!r} (sessions.py _sign_in_form takes next from the query string, which the form's POST has not)")


def published_with_grants(fwrepo: Fwrepo, vendor: str, chargers: int = 3, **fields: object) -> dict:
    """A published build of vendor, granted to a few chargers as a CSMS asks; its record."""
    with fwrepo.client("release") as release, fwrepo.client("csms") as csms:
        build = published_build(release, vendor, "3.1.0", **fields)
        for number in range(chargers):
            reply = csms.post("/api/v1/grants", json={"firmware_id": build["id"], "charger_id": f"CP-{number + 1:03}"})
            assert reply.status_code == 201, reply.text
    return build


def test_every_page_is_accessible_and_breaks_no_content_security_rule(
        browser: WebDriver, fwrepo: Fwrepo, people: dict[str, str], screenshots: Path,  # noqa: F811 (a fixture)
) -> None:
    vendor = unique_vendor()
    with fwrepo.client("release") as release:
        for version in ("3.0.0", "3.0.1"):
            assert upload(release, vendor, version, models="AC22,AC11", channel="beta").status_code == 201
    build = published_with_grants(fwrepo, vendor, release_notes="Faster boot.\nFixes the RFID reader on AC11.")

    visit(browser, fwrepo, "/console/login")
    screenshot(browser, "sign-in", screenshots)
    assert_clean(browser)

    sign_in(browser, fwrepo, people["admin"])
    visit(browser, fwrepo, f"/console/firmware?q={vendor}")
    assert len(browser.find_elements(By.CSS_SELECTOR, "main table tbody tr")) == 3
    screenshot(browser, "builds", screenshots)
    assert_clean(browser)

    visit(browser, fwrepo, f"/console/firmware/{build['id']}")
    assert browser.find_element(By.CSS_SELECTOR, "[aria-label='Newest grants']").text.count("CP-00") == 3
    screenshot(browser, "build", screenshots)
    assert_clean(browser)

    for path in ("/console/firmware/upload", f"/console/firmware/{build['id']}/yank"):
        visit(browser, fwrepo, path)
        assert_clean(browser)
    # The builds' filters, as a person fills them in.
    from selenium.webdriver.support.select import Select

    visit(browser, fwrepo, "/console/firmware")
    browser.find_element(By.ID, "vendor").send_keys(vendor)
    browser.find_element(By.ID, "channel").send_keys("beta")
    Select(browser.find_element(By.ID, "status")).select_by_visible_text("uploaded")
    click_and_wait(browser, button(browser, "Filter"))
    assert "status=uploaded" in browser.current_url and f"vendor={vendor}" in browser.current_url
    rows = browser.find_elements(By.CSS_SELECTOR, "main table tbody tr")
    assert sorted(row.find_element(By.CSS_SELECTOR, "a").text for row in rows) == ["3.0.0", "3.0.1"]
    assert browser.find_element(By.ID, "vendor").get_attribute("value") == vendor  # the form keeps them
    assert Select(browser.find_element(By.ID, "status")).first_selected_option.text == "uploaded"
    click_and_wait(browser, browser.find_element(By.CSS_SELECTOR, "main table tbody a"))
    click_and_wait(browser, link(browser, "Publish…"))
    assert heading(browser).startswith("Publish")
    screenshot(browser, "publish", screenshots)
    assert_clean(browser)

    visit(browser, fwrepo, "/console/firmware/no-such-build")
    assert heading(browser) == REFUSED
    assert_clean(browser, statuses=(404,))

    visit(browser, fwrepo, "/console/audit")
    assert_clean(browser)
    # The trail of one build: the whole trail of the session's server makes a very tall picture.
    visit(browser, fwrepo, f"/console/audit?subject=firmware {build['id']}")
    assert "publish" in browser.find_element(By.CSS_SELECTOR, "main table").text
    for path, name in ((None, "audit"), ("/console/audit/verify", "audit-verify"), ("/console/keys", "keys"),
                       ("/console/users", "users"), ("/console/clients", "clients")):
        if path:
            visit(browser, fwrepo, path)
        assert heading(browser) != REFUSED, path
        screenshot(browser, name, screenshots)
        assert_clean(browser)
    sign_out(browser)

    sign_in(browser, fwrepo, people["platform"], next_path="/console/tenants")
    assert heading(browser) == "Tenants"
    screenshot(browser, "tenants", screenshots)
    assert_clean(browser)


def test_at_a_phones_width_only_the_tables_scroll_sideways(
        browser: WebDriver, fwrepo: Fwrepo, people: dict[str, str], screenshots: Path,  # noqa: F811 (a fixture)
) -> None:
    vendor = unique_vendor()
    models = ",".join(f"AC{number}-EU-TYPE2-TETHERED" for number in range(8))
    build = published_with_grants(fwrepo, vendor, models=models, hardware_revisions="rev-A1,rev-B2,rev-C3",
                                  release_notes="A line of release notes long enough to need wrapping " * 4)
    sign_in(browser, fwrepo, people["admin"])
    with phone_width(browser):
        assert browser.execute_script("return window.innerWidth") == 390
        for path in (f"/console/firmware?q={vendor}", f"/console/firmware/{build['id']}"):
            visit(browser, fwrepo, path)
            assert_fits(browser, path)
            # The table is wider than the phone, and scrolls inside its own region.
            region = browser.find_element(By.CSS_SELECTOR, "main .scroll")
            inner, outer = browser.execute_script("return [arguments[0].scrollWidth, arguments[0].clientWidth]", region)
            assert inner > outer, path
        for path in ("/console/firmware/upload", f"/console/firmware/{build['id']}/yank", "/console/campaigns",
                     "/console/audit", "/console/keys", "/console/users", "/console/clients"):
            visit(browser, fwrepo, path)
            assert_fits(browser, path)
        visit(browser, fwrepo, f"/console/firmware?q={vendor}")
        screenshot(browser, "builds-phone", screenshots)


def assert_fits(driver: WebDriver, path: str) -> None:
    """The page scrolls only up and down: nothing in it is wider than the window."""
    page_width, window_width = driver.execute_script("return [document.documentElement.scrollWidth, window.innerWidth]")
    if page_width > window_width:
        widest = driver.execute_script("""
            const wide = [...document.querySelectorAll('main *')].filter(e => e.getBoundingClientRect().right > window.innerWidth + 1);
            const outermost = wide.filter(e => !wide.includes(e.parentElement));
            return outermost.slice(0, 3).map(e => `<${e.tagName.toLowerCase()}${e.id ? ' id=' + e.id : ''}> ` +
                                                  `${Math.round(e.getBoundingClientRect().width)} px`);""")
        raise AssertionError(f"{path}: the page is {page_width} px wide in a {window_width} px window; "
                             f"wider than the window: {widest}")


def test_the_campaign_form_fits_the_window_whatever_the_builds_it_offers(
        browser: WebDriver, fwrepo: Fwrepo, people: dict[str, str],  # noqa: F811 (a fixture)
) -> None:
    # A build for many models makes a long choice in the form's list of builds.
    models = ",".join(f"AC{number}-EU-TYPE2-TETHERED" for number in range(8))
    with fwrepo.client("release") as release:
        published_build(release, unique_vendor(), "1.4.0", models=models)
    sign_in(browser, fwrepo, people["csms"], next_path="/console/campaigns/new")
    assert heading(browser) == "Start a campaign"
    assert_fits(browser, "/console/campaigns/new at 1280 px")
    with phone_width(browser):
        assert_fits(browser, "/console/campaigns/new at 390 px")


def chargers_csv(tmp_path: Path, prefix: str, count: int) -> Path:
    path = tmp_path / f"{prefix}.csv"
    path.write_text("charger_id,current_version,model,time_zone\n" + "".join(
        f"{prefix}-{number:03},1.3.0,AC22,Europe/Berlin\n" for number in range(count)))
    return path


def due_grants(csms: httpx.Client, campaign_id: str) -> list[dict]:
    reply = csms.get(f"/api/v1/campaigns/{campaign_id}/grants", params={"due": "now"})
    assert reply.status_code == 200, reply.text
    return reply.json()["grants"]


def update_chargers(fwrepo: Fwrepo, csms: httpx.Client, grants: list[dict], version: str, failing: int = 0) -> None:
    """The chargers of these grants download the build from their location, then report as their CSMS passes
    it on: the first `failing` fail to install, the others boot the new version."""
    with httpx.Client(verify=fwrepo.tls(), timeout=60) as charger:
        for grant in grants:
            assert charger.get(grant["location"]).status_code == 200
    now = datetime.now(UTC)
    events = []
    for index, grant in enumerate(grants):
        events.append({"request_id": grant["request_id"], "status": "Installing",
                       "timestamp": (now - timedelta(seconds=1)).isoformat()})
        if index < failing:
            events.append({"request_id": grant["request_id"], "status": "InstallationFailed",
                           "timestamp": now.isoformat()})
        else:
            events.append({"request_id": grant["request_id"], "status": "Booted", "timestamp": now.isoformat(),
                           "firmware_version": version})
    reply = csms.post("/api/v1/events", json={"events": events})
    assert reply.status_code == 200, reply.text


def live_counts(driver: WebDriver) -> str:
    """The campaign's counts as one line: "0 of 8 finished - succeeded 1 of 2 waves ..."."""
    # Read in the page, in one step: an element found first may be replaced by the next update before its text is
    # asked for (a stale element).
    return " ".join(driver.execute_script("return document.querySelector('#live ul.counts').innerText").split())


def live_status(driver: WebDriver) -> str:
    """The campaign's status as its live region shows it, read in one step (see live_counts)."""
    return driver.execute_script("return document.querySelector('#live h2 .status').innerText").strip()


# Set on the page before it should change: a reload would lose it, a live update keeps it.
MARK_PAGE = "window.notReloaded = true"
NOT_RELOADED = "return window.notReloaded === true"


def test_a_campaign_started_from_a_csv_advances_on_its_page_by_itself_and_pauses(
        browser: WebDriver, fwrepo: Fwrepo, people: dict[str, str], screenshots: Path,  # noqa: F811 (a fixture)
        tmp_path: Path,
) -> None:
    from selenium.webdriver.support.select import Select

    vendor = unique_vendor()
    with fwrepo.client("release") as release:
        build = published_build(release, vendor, "1.4.0", models="AC22")
    prefix = f"CP{secrets.token_hex(3)}"

    # From the build's page, whose link names the build for the form.
    sign_in(browser, fwrepo, people["csms"], next_path=f"/console/firmware/{build['id']}")
    click_and_wait(browser, link(browser, "Start a campaign…"))
    assert heading(browser) == "Start a campaign"
    assert Select(browser.find_element(By.ID, "firmware_id")).first_selected_option.get_attribute("value") == build["id"]
    browser.find_element(By.ID, "chargers").send_keys(str(chargers_csv(tmp_path, prefix, 8)))
    waves = browser.find_element(By.ID, "waves")
    waves.clear()
    waves.send_keys("25%, 100%")
    threshold = browser.find_element(By.ID, "failure_threshold")
    threshold.clear()
    threshold.send_keys("50")
    # No maintenance window: within one, each charger's grant is due at a moment of its own in the window.
    screenshot(browser, "campaign-new", screenshots)
    assert_clean(browser)
    click_and_wait(browser, button(browser, "Start the campaign"))
    assert "/console/campaigns/" in browser.current_url, message(browser)
    campaign_id = browser.current_url.rsplit("/", 1)[1]
    assert heading(browser) == f"Campaign {campaign_id}"
    assert "0 of 8 finished" in live_counts(browser)
    assert "1 of 2 waves" in live_counts(browser)
    assert_clean(browser)

    # The chargers of the first wave update, as their CSMS tells fwrepo: the page shows it by itself.
    browser.execute_script(MARK_PAGE)
    with fwrepo.client("csms") as csms:
        first = due_grants(csms, campaign_id)
        assert len(first) == 2
        update_chargers(fwrepo, csms, first, "1.4.0")
        wait_until(browser, lambda d: "2 of 8 finished" in live_counts(d), 20)
        assert browser.execute_script(NOT_RELOADED)
        assert "2 of 2 waves" in live_counts(browser)
        assert "Updated" in browser.find_element(By.ID, "live-stamp").text
        second = due_grants(csms, campaign_id)
        assert len(second) == 6
        update_chargers(fwrepo, csms, second[:3], "1.4.0")
        wait_until(browser, lambda d: "5 of 8 finished" in live_counts(d), 20)
        assert browser.execute_script(NOT_RELOADED)
    assert "100%" in live_counts(browser)  # of those finished, every one succeeded
    assert len(browser.find_elements(By.CSS_SELECTOR, "#live .plots svg")) == 3
    screenshot(browser, "campaign", screenshots)
    assert_clean(browser)

    click_and_wait(browser, button(browser, "Pause"))
    assert live_status(browser) == "paused"
    assert [element.text for element in browser.find_elements(By.CSS_SELECTOR, "main .actions button")] == \
        ["Resume", "Cancel"]
    with fwrepo.client("csms") as csms:
        assert csms.get(f"/api/v1/campaigns/{campaign_id}").json()["status"] == "paused"
    assert_clean(browser, axe=False)

    visit(browser, fwrepo, "/console/campaigns")
    assert campaign_id in browser.find_element(By.CSS_SELECTOR, "main table").text
    screenshot(browser, "campaigns", screenshots)
    assert_clean(browser)

    visit(browser, fwrepo, f"/console/chargers?id={prefix}-000")
    assert heading(browser) == "Chargers"
    assert campaign_id in browser.find_element(By.ID, "main").text
    screenshot(browser, "charger", screenshots)
    assert_clean(browser)


def campaign_of(fwrepo: Fwrepo, chargers: int, **options: object) -> tuple[str, str]:
    """A running campaign of a build of its own to chargers of their own, started through the API: its ID and
    its chargers' prefix."""
    prefix = f"CP{secrets.token_hex(3)}"
    with fwrepo.client("release") as release, fwrepo.client("csms") as csms:
        build = published_build(release, unique_vendor(), "1.4.0", models="AC22")
        reply = csms.post("/api/v1/campaigns", json={
            "firmware_id": build["id"], **options,
            "chargers": [{"charger_id": f"{prefix}-{number:03}", "current_version": "1.3.0", "model": "AC22"}
                         for number in range(chargers)]})
        assert reply.status_code == 201, reply.text
        return reply.json()["id"], prefix


def steering_buttons(driver: WebDriver) -> list[str]:
    return [element.text for element in driver.find_elements(By.CSS_SELECTOR, "main .actions button")]


def test_a_campaign_whose_first_wave_fails_past_its_threshold_shows_it_halted_and_why(
        browser: WebDriver, fwrepo: Fwrepo, people: dict[str, str], screenshots: Path,  # noqa: F811 (a fixture)
) -> None:
    halting, _ = campaign_of(fwrepo, 10, waves=["20%", "100%"], failure_threshold=0.25)
    sign_in(browser, fwrepo, people["csms"], next_path=f"/console/campaigns/{halting}")
    assert live_status(browser) == "running"
    assert steering_buttons(browser) == ["Pause", "Cancel"]
    browser.execute_script(MARK_PAGE)
    # A keyboard user on the Pause button: the region waits for the focus to leave it before it changes.
    pause = button(browser, "Pause")
    browser.execute_script("arguments[0].focus()", pause)
    with fwrepo.client("csms") as csms:
        update_chargers(fwrepo, csms, due_grants(csms, halting), "1.4.0", failing=2)
        assert csms.get(f"/api/v1/campaigns/{halting}").json()["status"] == "halted"
    with pytest.raises(TimeoutException):  # two of its polls (every 2 s) pass by
        wait_until(browser, gone(pause), 4.5)
    assert browser.execute_script("return document.activeElement === arguments[0]", pause)
    browser.execute_script("arguments[0].blur()", pause)
    wait_until(browser, lambda d: live_status(d) == "halted", 20)
    assert browser.execute_script(NOT_RELOADED)
    reason = browser.find_element(By.ID, "status-reason").text
    assert reason.startswith("Halted: wave 1: 2 of 2 chargers failed"), reason
    assert "0% succeeded" in live_counts(browser)
    wait_until(browser, lambda d: "(final)" in d.find_element(By.ID, "live-stamp").text, 10)
    buttons_once_halted_live = steering_buttons(browser)

    visit(browser, fwrepo, f"/console/campaigns/{halting}")  # as it shows once halted
    assert browser.find_element(By.ID, "status-reason").text == reason
    assert steering_buttons(browser) == ["Cancel"]  # a halted campaign cannot be paused, nor resumed
    assert not browser.find_elements(By.CSS_SELECTOR, "[data-live]")
    screenshot(browser, "campaign-halted", screenshots)
    assert_clean(browser)
    with phone_width(browser):
        assert_fits(browser, f"/console/campaigns/{halting}")

    # The page that saw the halt come offers what the halted campaign allows, as the reloaded page does.
    assert buttons_once_halted_live == ["Cancel"], (
        f"after the live region showed the halt, the page still offers {buttons_once_halted_live}: the "
        "steering buttons are outside the live region (campaign.html), so Pause stays, though a halted campaign "
        "cannot be paused")


def test_a_campaigns_plots_keep_every_label_inside_the_picture(
        browser: WebDriver, fwrepo: Fwrepo, people: dict[str, str],  # noqa: F811 (a fixture)
) -> None:
    campaign_id, _ = campaign_of(fwrepo, 6)
    with fwrepo.client("csms") as csms:
        update_chargers(fwrepo, csms, due_grants(csms, campaign_id), "1.4.0", failing=1)
    sign_in(browser, fwrepo, people["csms"], next_path=f"/console/campaigns/{campaign_id}")
    plots = browser.find_elements(By.CSS_SELECTOR, "#live .plots svg")
    assert len(plots) == 3
    outside = browser.execute_script("""
        const outside = [];
        for (const svg of arguments[0]) {
          const frame = svg.getBoundingClientRect();
          const title = svg.querySelector('title').textContent;
          for (const text of svg.querySelectorAll('text')) {
            const box = text.getBoundingClientRect();
            if (box.left < frame.left - 0.5 || box.right > frame.right + 0.5 ||
                box.top < frame.top - 0.5 || box.bottom > frame.bottom + 0.5)
              outside.push(`${title}: "${text.textContent}" spans x ${Math.round(box.left - frame.left)} to ` +
                           `${Math.round(box.right - frame.left)} of ${Math.round(frame.width)}`);
          }
        }
        return outside;""", plots)
    assert outside == [], f"labels cut off at the plots' edges (repo_service/console/plots.py): {outside}"
