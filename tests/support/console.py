"""People at the web console: users made with `fwrepo users create`, and a browser signed in as one of them.

Used by the console's browser tests (tests/test_console_browser.py) and its security tests; small on purpose.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
from typing import TYPE_CHECKING

from tests.support.browser import gone, trust_ca, wait_until
from tests.support.fwrepo import Fwrepo

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

__all__ = ["PASSWORD", "make_user", "make_users", "sign_in", "unique_name"]

# Long enough for `fwrepo users create` (12 characters at least).
PASSWORD = "correct horse battery staple"


def unique_name(prefix: str = "user") -> str:
    """A user name no other test on the session's server uses."""
    return f"{prefix}-{secrets.token_hex(4)}"


def make_user(fwrepo: Fwrepo, name: str, role: str, password: str = PASSWORD, tenant: str = "default") -> str:
    """A console user of role (release, csms, admin or platform) in tenant, made with the CLI; its name.

    A tenant other than the default is made first if the fixture has not made it yet (as Fwrepo.key does).
    """
    if tenant != "default" and not any(known.startswith(f"{tenant}/") for known in fwrepo.keys):
        fwrepo.key("release", tenant)
    fwrepo.cli("users", "create", "--name", name, "--role", role, "--tenant", tenant,
               stdin=f"{password}\n".encode())
    return name


# `fwrepo users create` for each (name, role) in argv, in one interpreter: the CLI's start (about a second of
# imports, several on a loaded machine) is paid once. Each reads its password from its own line of stdin. The
# passwords are hashed with a cheap scrypt: the hash names its parameters, so each sign-in's check is as cheap
# (a quarter of a second less on a loaded machine); these tests are of pages, not of what a guess costs.
_CREATE_EACH = """
import sys
from repo_service.cli import main
from repo_service.domain import users
users.SCRYPT_N = 2**10
pairs = sys.argv[1:]
for name, role in zip(pairs[::2], pairs[1::2]):
    if main(["users", "create", "--name", name, "--role", role]):
        sys.exit(f"fwrepo users create --name {name} --role {role} failed")
"""


def make_users(fwrepo: Fwrepo, roles: dict[str, str], password: str = PASSWORD) -> dict[str, str]:
    """Users of the default tenant, one per entry of roles (a key for the test's use: a role), made as
    `fwrepo users create` makes them, all in one process and with cheap password hashes; each key's user name
    (unique_name of the role)."""
    names = {key: unique_name(role) for key, role in roles.items()}
    arguments = [part for key, role in roles.items() for part in (names[key], role)]
    result = subprocess.run([sys.executable, "-c", _CREATE_EACH, *arguments], env=fwrepo.env, check=False,
                            capture_output=True, text=True, timeout=120, input=f"{password}\n" * len(roles))
    if result.returncode != 0:
        raise AssertionError(f"fwrepo users create failed ({result.returncode}): {result.stderr[-2000:]}")
    return names


def sign_in(driver: WebDriver, fwrepo: Fwrepo, name: str, password: str = PASSWORD, *, next_path: str = "",
            expect_success: bool = True) -> None:
    """Sign in on the console's sign-in page as a person does: the form filled in and submitted.

    next_path is a console path to land on after it (e.g. "/console/firmware/upload"). With expect_success,
    waits until the browser has left the sign-in page (and fails if it has not within 15 s); without it,
    waits until the page answered (the sign-in page again, with its message).
    """
    from selenium.webdriver.common.by import By

    trust_ca(driver, fwrepo.ca)
    address = f"{fwrepo.url}/console/login"
    if next_path:
        from urllib.parse import quote
        address += f"?next={quote(next_path)}"
    driver.get(address)
    forms = driver.find_elements(By.CSS_SELECTOR, "form[action='/console/login']")
    if not forms:
        shown = driver.execute_script("return document.body ? document.body.innerText : ''")[:500]
        raise AssertionError(f"no sign-in form at {driver.current_url} ({driver.title!r}): {shown!r}")
    form = forms[0]
    form.find_element(By.ID, "name").send_keys(name)
    form.find_element(By.ID, "password").send_keys(password)
    old = driver.find_element(By.TAG_NAME, "html")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    # The click does not wait for the next page: the old page's element goes stale once it has come.

    wait_until(driver, gone(old), 15)
    if expect_success:
        wait_until(driver, lambda d: "/console/login" not in d.current_url, 15)
