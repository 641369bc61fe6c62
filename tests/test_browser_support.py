"""The browser fixture works: chromium loads pages over real TLS under a strict CSP, and its helpers see what a person would.

A small HTTPS server (the standard library's, in a thread) serves pages with
``Content-Security-Policy: default-src 'self'``, as the console's pages are
served, from a certificate of its own CA that the browser is told to trust.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.support.browser import (  # noqa: F401  (browser and chromium are fixtures)
    axe_violations,
    browser,
    chromium,
    console_errors,
    describe_violations,
    phone_width,
    screenshot,
    start_seconds,
    trust_ca,
    trusts_cas,
    wait_until,
)

CSP = "default-src 'self'"
HEAD = '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>' \
       '<meta name="viewport" content="width=device-width, initial-scale=1"><link rel=stylesheet href="/app.css"></head><body><main>{body}</main></body></html>'
PAGES = {
    "/form": HEAD.format(title="Console form", body=(
        "<h1>Chargers</h1><p id=script-state>script did not run</p>"
        '<form method=post action="/submitted"><label for=name>Charger name</label>'
        "<input id=name name=name><button type=submit>Save</button></form>"
        '<script src="/app.js"></script>')),
    "/unlabelled": HEAD.format(title="Unlabelled input", body=(
        '<h1>Bad form</h1><form method=post action="/submitted"><input id=name name=name>'
        "<button type=submit>Save</button></form>")),
    "/inline": HEAD.format(title="Inline script", body=(
        "<h1>Inline</h1><p id=inline-state>inline did not run</p>"
        "<script>document.getElementById('inline-state').textContent = 'inline ran';</script>")),
    "/tall": HEAD.format(title="Tall page", body=(
        '<h1>Tall</h1><div class=tall>a tall block</div><p>the end</p>')),
    "/wide": HEAD.format(title="Width", body="<h1>Width</h1>"),
}
APP_JS = "document.getElementById('script-state').textContent = 'script ran';\n"
# A style attribute is inline too, and default-src 'self' blocks it: the page's styles come from a file.
APP_CSS = "body { font-family: sans-serif; margin: 2rem; }\n.tall { height: 2400px; }\n"


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_tls(directory: Path, label: str) -> tuple[Path, Path, Path]:
    """A CA and a certificate for 127.0.0.1 it issued: (ca.pem, cert.pem, key.pem)."""
    now = datetime.datetime.now(datetime.UTC)
    valid = {"not_valid_before": now - datetime.timedelta(hours=1), "not_valid_after": now + datetime.timedelta(days=2)}
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder(subject_name=_name(f"{label} test CA"), issuer_name=_name(f"{label} test CA"),
                                  public_key=ca_key.public_key(), serial_number=x509.random_serial_number(), **valid)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                                       encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder(subject_name=_name("127.0.0.1"), issuer_name=ca.subject, public_key=key.public_key(),
                                    serial_number=x509.random_serial_number(), **valid)
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = directory / f"{label}-ca.pem", directory / f"{label}-cert.pem", directory / f"{label}-key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


class _Pages(BaseHTTPRequestHandler):
    def _send(self, status: int, body: str, content_type: str = "text/html; charset=utf-8") -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Content-Security-Policy", CSP)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path == "/app.js":
            self._send(200, APP_JS, "text/javascript; charset=utf-8")
        elif self.path == "/app.css":
            self._send(200, APP_CSS, "text/css; charset=utf-8")
        elif self.path in PAGES:
            self._send(200, PAGES[self.path])
        else:
            self._send(404, HEAD.format(title="Not found", body="<h1>Not found</h1>"))

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        fields = parse_qs(self.rfile.read(length).decode())
        name = fields.get("name", [""])[0].replace("<", "&lt;")
        self._send(200, HEAD.format(title="Saved", body=f"<h1>Saved</h1><p id=saved>{name}</p>"))

    def log_message(self, format: str, *args: object) -> None:
        pass


@dataclass
class PageServer:
    url: str
    ca: Path


def _serve(directory: Path, label: str) -> Iterator[PageServer]:
    ca, certificate, key = make_tls(directory, label)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Pages)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificate, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, name=f"pages-{label}", daemon=True)
    thread.start()
    try:
        yield PageServer(f"https://127.0.0.1:{server.server_address[1]}", ca)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PageServer]:
    yield from _serve(tmp_path_factory.mktemp("pages-tls"), "pages")


@pytest.fixture
def site(browser, pages: PageServer):  # noqa: F811 (the fixture imported above)
    """The browser, trusting the pages' CA."""
    trust_ca(browser, pages.ca)
    return browser


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


def test_chromium_starts_headless_and_reports_its_start_time(chromium):  # noqa: F811
    seconds = start_seconds(chromium)
    print(f"chromium started in {seconds:.2f} s")
    assert 0 < seconds < 60
    assert "HeadlessChrome" in chromium.execute_script("return navigator.userAgent")


def test_a_same_origin_script_runs_and_a_form_submits_over_tls(site, pages):
    site.get(pages.url + "/form")
    assert site.title == "Console form"  # not chromium's "Privacy error" page: the chain verified
    assert site.find_element("id", "script-state").text == "script ran"
    site.find_element("id", "name").send_keys("CP-0001 <east>")
    site.find_element("css selector", "button[type=submit]").click()
    wait_until(site, lambda driver: driver.title == "Saved")  # a click does not wait for the page
    assert site.find_element("id", "saved").text == "CP-0001 <east>"
    assert site.title == "Saved"
    assert console_errors(site) == []


def test_an_inline_script_is_blocked_by_the_csp_and_shows_in_the_console_errors(site, pages):
    site.get(pages.url + "/inline")
    assert site.find_element("id", "inline-state").text == "inline did not run"
    errors = console_errors(site)
    assert any("Content Security Policy" in error["message"] and "inline" in error["message"]
               for error in errors), errors
    assert console_errors(site) == [], "reading the errors empties the log"


def test_a_screenshot_is_as_tall_as_the_page(site, pages, tmp_path):
    site.get(pages.url + "/tall")
    path = screenshot(site, "tall", directory=tmp_path)
    width, height = png_size(path)
    page_height = site.execute_script("return document.documentElement.scrollHeight")
    assert width == 1280
    assert height == page_height > 2400
    assert console_errors(site) == []
    assert site.get_window_size() == {"width": 1280, "height": 900}, "the window is put back"
    with pytest.raises(ValueError):
        screenshot(site, "../escape", directory=tmp_path)


def test_phone_width_gives_a_phones_viewport(site, pages, tmp_path):
    site.get(pages.url + "/wide")
    with phone_width(site):
        assert site.execute_script("return [window.innerWidth, window.innerHeight]") == [390, 844]
        assert png_size(screenshot(site, "phone", directory=tmp_path)) == (390, 844)
    assert site.execute_script("return window.innerWidth") == 1280
    assert site.get_window_size() == {"width": 1280, "height": 900}


def test_axe_finds_an_unlabelled_input_and_nothing_on_a_good_page(site, pages):
    site.get(pages.url + "/unlabelled")
    violations = axe_violations(site)
    assert "label" in {violation["id"] for violation in violations}, describe_violations(violations)
    site.get(pages.url + "/form")
    violations = axe_violations(site)
    assert violations == [], describe_violations(violations)
    assert console_errors(site) == [], "injecting axe under the strict CSP is not a CSP violation"


def test_each_test_starts_without_the_last_ones_cookies(site, pages):
    site.get(pages.url + "/wide")
    assert site.get_cookies() == []
    site.add_cookie({"name": "session", "value": "left-behind"})
    assert site.get_cookie("session")["value"] == "left-behind"


def test_and_the_next_one_finds_none(site, pages):
    site.get(pages.url + "/wide")
    assert site.get_cookies() == []


def test_a_server_of_a_ca_not_trusted_is_refused(browser, tmp_path):  # noqa: F811
    """The browser verifies certificates: trust_ca is what lets a test server's page through."""
    if not trusts_cas(browser):
        pytest.skip("certutil not found (libnss3-tools): this browser ignores certificate errors")
    for other in _serve(tmp_path, "other"):
        browser.get(other.url + "/wide")
        assert browser.title != "Width"
        assert "ERR_CERT_AUTHORITY_INVALID" in browser.page_source


def test_fwrepos_development_certificate_verifies_once_its_ca_is_trusted(browser, fwrepo):  # noqa: F811
    """What the console's tests do: the session's fwrepo serves its own development CA's certificate."""
    trust_ca(browser, fwrepo.ca)
    browser.get(fwrepo.url + "/healthz")
    assert '"status":"ok"' in browser.find_element("tag name", "body").text.replace(" ", "")
    assert "ERR_CERT" not in browser.page_source
