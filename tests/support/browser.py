"""A real browser for the web console's tests: Debian's headless chromium driven by Selenium through chromedriver.

One chromium per pytest-xdist worker (``chromium``, session-scoped: a start
costs about 1.5 s, more on a loaded machine), handed to each test by
``browser`` (function-scoped) with its state reset: every cookie and the cache
cleared, extra tabs closed, the window back to 1280x900 and the console log
drained, so a test starts logged out and sees only its own console errors.
A fresh BiDi user context per test would isolate more (localStorage too) but
costs 0.5-0.8 s per test against about 0.07 s for the reset; server-rendered
console pages keep their state in cookies. ``browser`` also clears the storage
of the origin a test ended on.

TLS: each test server has its own CA (a ``fwrepo serve`` makes a development
CA on first start). ``trust_ca(driver, ca_pem)`` adds it to the browser's own
NSS certificate store (certutil, from libnss3-tools, on a HOME of the
browser's own), so chromium verifies the server's chain as a person's browser
would: a wrong name or an expired certificate still fails. Chromium reads the
store when it verifies a certificate, so a CA added after the start counts,
but it remembers a refusal: add the CA before the first visit to its server. Without certutil the
browser starts with ``--ignore-certificate-errors`` instead (and says so).

Helpers: ``screenshot`` (a full-height PNG, into docs/console/ unless told),
``axe_violations`` (axe-core's WCAG 2 A/AA rules on the current page, from the
file ``make axe-core`` caches), ``phone_width`` (390 px wide for a block) and
``console_errors`` (the console's errors since the last call; CSP violations
are among them).

Where chromium, chromedriver or selenium are missing, the fixtures skip and say
why, as the Ceph tests do; ``make test`` installs them when run as root.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import warnings
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.support.checkout import ROOT

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

__all__ = [
    "AXE_JS",
    "SCREENSHOTS",
    "WCAG_TAGS",
    "axe_violations",
    "browser",
    "browser_unavailable_reason",
    "chromium",
    "console_errors",
    "describe_violations",
    "phone_width",
    "running_chromium",
    "screenshot",
    "start_seconds",
    "trust_ca",
    "trusts_cas",
    "wait_until",
]

CHROMIUM = os.environ.get("FWREPO_CHROMIUM", "chromium")
CHROMEDRIVER = os.environ.get("FWREPO_CHROMEDRIVER", "chromedriver")
AXE_JS = ROOT / ".cache" / "axe-core" / "axe.min.js"
SCREENSHOTS = ROOT / "docs" / "console"
WINDOW = (1280, 900)
PHONE = (390, 844)
# A screenshot grows the window to the page's height, up to this: chromium draws very tall windows slowly.
SCREENSHOT_MAX_HEIGHT = 6000
# axe-core's tags for WCAG 2.0, 2.1 and 2.2 at levels A and AA (its best-practice rules are left out).
WCAG_TAGS = ("wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa")
ARGUMENTS = (
    "--headless=new",
    "--no-sandbox",  # root, and no user namespaces in a container: the sandbox cannot start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # No traffic of its own (updates, safe browsing lists, sync): this machine reaches no such host,
    # and a test's page loads must not wait on one.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",  # a container's /dev/shm is small; chromium's renderers crash when it fills
    f"--window-size={WINDOW[0]},{WINDOW[1]}",
)
PAGE_LOAD_SECONDS = 30
AXE_SECONDS = 60
QUIT_SECONDS = 10


def browser_unavailable_reason() -> str | None:
    """Why the browser tests cannot run here, or None."""
    missing = [name for name in (CHROMIUM, CHROMEDRIVER) if shutil.which(name) is None]
    if missing:
        return f"{' and '.join(missing)} not found (Debian's chromium and chromium-driver; make test installs them as root)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    return None


@dataclass
class _Session:
    """What the helpers need to know about a running chromium beyond its WebDriver."""

    directory: Path
    nssdb: Path | None
    start_seconds: float
    trusted: set[Path] = field(default_factory=set)


_SESSIONS: weakref.WeakKeyDictionary[Any, _Session] = weakref.WeakKeyDictionary()


def _certutil(*arguments: str) -> None:
    subprocess.run(["certutil", *arguments], check=True, capture_output=True, text=True, timeout=30)


def _our_chromium_pids(user_data_dir: Path) -> list[int]:
    """Processes whose command line names this browser's own profile: only chromium processes we started do."""
    marker = f"--user-data-dir={user_data_dir}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


@contextmanager
def running_chromium(directory: Path, *, trusted_cas: Sequence[Path | str] = ()) -> Iterator[WebDriver]:
    """A headless chromium with a profile, HOME and certificate store of its own under ``directory``."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    directory.mkdir(parents=True, exist_ok=True)
    home = directory / "home"
    profile = directory / "profile"
    home.mkdir(exist_ok=True)
    arguments = [*ARGUMENTS, f"--user-data-dir={profile}"]
    nssdb: Path | None = None
    if shutil.which("certutil"):
        # Chromium on Linux takes locally trusted roots from the NSS store in $HOME/.pki/nssdb.
        nssdb = home / ".pki" / "nssdb"
        nssdb.mkdir(parents=True, exist_ok=True)
        _certutil("-N", "-d", f"sql:{nssdb}", "--empty-password")
    else:
        # No certutil (libnss3-tools), so no way to add a test server's CA to the browser's store: accept any
        # certificate instead. The browser reaches only the loopback servers its tests started.
        arguments.append("--ignore-certificate-errors")
        warnings.warn("certutil not found (libnss3-tools): the test browser ignores certificate errors", stacklevel=3)

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which(CHROMIUM) or CHROMIUM
    for argument in arguments:
        options.add_argument(argument)
    # The page's console (CSP violations, script errors) is read back by console_errors.
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    environment = {
        **os.environ,
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_CACHE_HOME": str(home / ".cache"),
    }
    service = Service(shutil.which(CHROMEDRIVER) or CHROMEDRIVER, log_output=str(directory / "chromedriver.log"),
                      env=environment)
    started = time.monotonic()
    driver = webdriver.Chrome(options=options, service=service)
    try:
        driver.set_page_load_timeout(PAGE_LOAD_SECONDS)
        driver.set_script_timeout(AXE_SECONDS)
        _SESSIONS[driver] = _Session(directory, nssdb, time.monotonic() - started)
        for ca in trusted_cas:
            trust_ca(driver, ca)
        yield driver
    finally:
        try:
            driver.quit()
        except Exception:  # noqa: BLE001 (a crashed browser or driver: what is left is ended below)
            service.stop()
        deadline = time.monotonic() + QUIT_SECONDS
        while (left := _our_chromium_pids(profile)) and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def start_seconds(driver: WebDriver) -> float:
    """How long this chromium took to start, to its first WebDriver answer."""
    return _SESSIONS[driver].start_seconds


def trusts_cas(driver: WebDriver) -> bool:
    """Whether trust_ca really trusts (certutil found) rather than the browser ignoring every certificate error."""
    return _SESSIONS[driver].nssdb is not None


def trust_ca(driver: WebDriver, ca_pem: Path | str) -> None:
    """Trust a test server's CA (a PEM file) for TLS servers, in this browser's store; before its server's first visit."""
    session = _SESSIONS[driver]
    path = Path(ca_pem).resolve()
    if session.nssdb is None or path in session.trusted:
        return  # started with --ignore-certificate-errors, or trusted already (certutil takes 50-100 ms)
    _certutil("-A", "-d", f"sql:{session.nssdb}", "-n", f"test CA {path}", "-t", "C,,", "-i", str(path))
    session.trusted.add(path)


def _reset(driver: WebDriver) -> None:
    handles = driver.window_handles
    for handle in handles[1:]:
        driver.switch_to.window(handle)
        driver.close()
    driver.switch_to.window(handles[0])
    driver.get("about:blank")
    driver.execute_cdp_cmd("Network.clearBrowserCookies", {})
    driver.execute_cdp_cmd("Network.clearBrowserCache", {})
    driver.set_window_size(*WINDOW)
    driver.get_log("browser")  # drained: the next test sees only its own console


def _clear_origin_storage(driver: WebDriver) -> None:
    origin = driver.execute_script("return window.location.origin")
    if origin and origin.startswith(("http://", "https://")):
        driver.execute_cdp_cmd("Storage.clearDataForOrigin", {"origin": origin, "storageTypes": "all"})


@pytest.fixture(scope="session")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    """This worker's one headless chromium; tests take it through ``browser``, which resets it first."""
    reason = browser_unavailable_reason()
    if reason:
        pytest.skip(reason)
    with running_chromium(tmp_path_factory.mktemp("chromium")) as driver:
        yield driver


@pytest.fixture
def browser(chromium: WebDriver) -> Iterator[WebDriver]:
    """The worker's chromium with no cookies, no cache, one blank tab at 1280x900 and an empty console log."""
    from selenium.common.exceptions import WebDriverException

    _reset(chromium)
    yield chromium
    with suppress(WebDriverException):  # a test that broke the page; the next _reset still clears cookies and cache
        _clear_origin_storage(chromium)


# -- helpers ----------------------------------------------------------------------------


def screenshot(driver: WebDriver, name: str, directory: Path | str = SCREENSHOTS,
               max_height: int = SCREENSHOT_MAX_HEIGHT) -> Path:
    """The whole page, as tall as it is (up to max_height), as DIRECTORY/NAME.png; the window's size is kept."""
    if "/" in name or name.startswith("."):
        raise ValueError(f"a screenshot's name is a plain file name: {name!r}")
    path = Path(directory) / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    size = driver.get_window_size()
    page_height, chrome_height = driver.execute_script(
        "return [Math.max(document.body ? document.body.scrollHeight : 0, document.documentElement.scrollHeight),"
        " window.outerHeight - window.innerHeight]")
    try:
        driver.set_window_size(size["width"], min(max(page_height + chrome_height, 100), max_height))
        path.write_bytes(driver.get_screenshot_as_png())
    finally:
        driver.set_window_size(size["width"], size["height"])
    return path


@contextmanager
def phone_width(driver: WebDriver, width: int = PHONE[0], height: int = PHONE[1]) -> Iterator[WebDriver]:
    """A phone's viewport (390x844 CSS pixels unless told) for the block; the window's size is restored after.

    Headless chromium's window is taller than its viewport (by 143 px in chromium 156, as if it had a tab
    strip and toolbar), so the window is made that much taller than ``height``.
    """
    size = driver.get_window_size()
    chrome_height = driver.execute_script("return window.outerHeight - window.innerHeight")
    driver.set_window_size(width, height + max(chrome_height, 0))
    try:
        yield driver
    finally:
        driver.set_window_size(size["width"], size["height"])


def console_errors(driver: WebDriver, *, favicon: bool = False) -> list[dict[str, Any]]:
    """The console's errors (level SEVERE: CSP violations, uncaught exceptions, failed loads) since the last call.

    Each is chromedriver's log entry: ``level``, ``message``, ``source`` ("security" for a CSP violation,
    "javascript", "network", ...) and ``timestamp``. Reading the log empties it. A failed /favicon.ico, which
    the browser asks for by itself on a page that names no icon, is left out unless ``favicon``.
    """
    return [entry for entry in driver.get_log("browser") if entry.get("level") == "SEVERE"
            and (favicon or not (entry.get("source") == "network" and "/favicon.ico " in entry.get("message", "")))]


def wait_until(driver: WebDriver, condition: Callable[[WebDriver], Any], seconds: float = 10) -> Any:
    """What condition(driver) returns once it is true, within seconds (a click that submits a form does not wait)."""
    from selenium.webdriver.support.wait import WebDriverWait

    return WebDriverWait(driver, seconds).until(condition)


def gone(element: Any) -> Callable[[WebDriver], bool]:
    """A condition for wait_until: element has left the page (the next page replaced it). As Selenium's
    staleness_of, and also when chromedriver, asked about a node of a page it is tearing down, answers "Node
    with given id does not belong to the document" instead of a stale-element error (seen in CI)."""
    from selenium.common.exceptions import WebDriverException

    def check(driver: WebDriver) -> bool:
        try:
            element.is_enabled()
        except WebDriverException:  # StaleElementReferenceException is one; so is the inspector's error
            return True
        return False

    return check


_AXE_RUN = """
const [tags, done] = [arguments[0], arguments[arguments.length - 1]];
axe.run(document, {runOnly: {type: 'tag', values: tags}, resultTypes: ['violations']})
  .then(results => done({violations: results.violations}))
  .catch(error => done({error: String(error && error.stack || error)}));
"""


def axe_violations(driver: WebDriver, tags: Sequence[str] = WCAG_TAGS, axe_js: Path = AXE_JS) -> list[dict[str, Any]]:
    """axe-core's violations of the given rules' tags (WCAG 2 A and AA) on the current page.

    Each is axe's result: ``id`` (the rule, e.g. "label"), ``impact``, ``help``, ``helpUrl`` and ``nodes``
    (each with ``html`` and ``target``). axe is injected through WebDriver, which a page's CSP does not
    restrict. Skips, saying why, when ``make axe-core`` has not cached axe.min.js.
    """
    if not axe_js.is_file():
        pytest.skip(f"{axe_js.relative_to(ROOT) if axe_js.is_relative_to(ROOT) else axe_js} is missing: "
                    "make axe-core fetches it with npm")
    if not driver.execute_script("return typeof window.axe === 'object'"):
        driver.execute_script(axe_js.read_text())
    result = driver.execute_async_script(_AXE_RUN, list(tags))
    if "error" in result:
        raise RuntimeError(f"axe.run failed: {result['error']}")
    return result["violations"]


def describe_violations(violations: list[dict[str, Any]]) -> str:
    """One line per violation and element, for an assertion's message."""
    return "\n".join(f"{v['id']} ({v.get('impact')}): {v['help']} at {node.get('target')}: {node.get('html')}"
                     for v in violations for node in v.get("nodes", [])) or "no violations"
