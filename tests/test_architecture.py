"""Dependencies point inward, layer by layer, and tests share helpers only through tests/support.

The domain core is plain Python. ``repo_service/services.py`` builds the
domain's objects from settings for every adapter; ``repo_service/metrics.py``
is the Prometheus sink that counts what the domain and the adapters do.
HTTP and FTPS are adapters side by side over the domain; the CLI is the
process that starts them. Each rule below names what a layer must not import;
every import counts, including those inside functions and ``TYPE_CHECKING``
blocks, because a lazy import is a dependency all the same.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.checkout import PACKAGE, ROOT, cli_modules

TESTS = ROOT / "tests"

WEB_FRAMEWORK = {"starlette", "uvicorn"}
FTP_FRAMEWORK = {"pyftpdlib", "OpenSSL"}  # pyOpenSSL is imported for pyftpdlib's TLS handler alone
S3_SDK = {"boto3", "botocore"}
HTTP_CLIENT = {"httpx"}
PROMETHEUS = {"prometheus_client"}
AMQP_CLIENT = {"pika"}
LIBRARIES = WEB_FRAMEWORK | FTP_FRAMEWORK | S3_SDK | HTTP_CLIENT | PROMETHEUS | AMQP_CLIENT

HTTP = "repo_service.http"
CONSOLE = "repo_service.console"
FTPS = "ftps"
CLI = "repo_service.cli"
CLIENT = "repo_service.client"
SERVICES = "repo_service.services"
STORAGE_BACKENDS = {"repo_service.storage.local", "repo_service.storage.s3"}
# Like the storage backends: the domain knows the interface (repo_service.csms), services picks the connector.
CSMS_CONNECTORS = {"repo_service.csms.citrineos"}
ADAPTERS = {HTTP, CONSOLE, FTPS, CLI}


@dataclass(frozen=True)
class Import:
    """One imported module, with the name taken from it for ``from module import name``."""

    module: str
    name: str | None = None

    @property
    def targets(self) -> set[str]:
        # `from repo_service import http` imports the package repo_service.http.
        return {self.module} | ({f"{self.module}.{self.name}"} if self.name else set())

    def reaches(self, packages: set[str]) -> bool:
        return any(target == package or target.startswith(package + ".")
                   for target in self.targets for package in packages)

    def __str__(self) -> str:
        return f"from {self.module} import {self.name}" if self.name else f"import {self.module}"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> Iterator[Import]:
    """Every import in the file, at any depth, with relative imports resolved."""
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (Import(alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            yield from (Import(module, alias.name) for alias in node.names)


def python_files(place: Path) -> list[Path]:
    """The modules of a package directory (searched through), or the one module a file is."""
    return sorted(place.rglob("*.py")) if place.is_dir() else [place] if place.exists() else []


@dataclass(frozen=True)
class Layer:
    name: str
    files: list[Path]
    forbidden: set[str]
    why: str


LAYERS = [
    Layer("domain", python_files(PACKAGE / "domain"),
          LIBRARIES | ADAPTERS | {SERVICES} | STORAGE_BACKENDS | CSMS_CONNECTORS,
          "the domain core is plain Python: adapters call it, it calls the storage interface and the database"),
    Layer("contract", python_files(PACKAGE / "contract"),
          LIBRARIES | ADAPTERS | {SERVICES} | STORAGE_BACKENDS | CSMS_CONNECTORS,
          "the wire models are shared by the HTTP adapter and clients: they take the domain's limits, nothing else"),
    Layer("services", python_files(PACKAGE / "services.py"),
          WEB_FRAMEWORK | FTP_FRAMEWORK | S3_SDK | HTTP_CLIENT | ADAPTERS,
          "services builds the domain from settings for every adapter, so it knows none of them: they import it"),
    Layer("metrics", python_files(PACKAGE / "metrics.py"),
          WEB_FRAMEWORK | FTP_FRAMEWORK | S3_SDK | HTTP_CLIENT | ADAPTERS | {SERVICES} | STORAGE_BACKENDS,
          "metrics is a sink the domain and every adapter report to: it counts domain facts and knows no adapter"),
    Layer("http", python_files(PACKAGE / "http"), FTP_FRAMEWORK | {FTPS, CLI},
          "the HTTPS adapter shares with FTPS only what both call in the domain, never each other's code"),
    Layer("console", python_files(PACKAGE / "console"), FTP_FRAMEWORK | S3_SDK | HTTP_CLIENT | {FTPS, CLI},
          "the console is the HTTP adapter's pages for people: it translates forms to the domain as the API does, "
          "and shares the API's upload stream, never FTPS's or the CLI's code"),
    Layer("ftps", python_files(ROOT / "ftps"), WEB_FRAMEWORK | {HTTP, CONSOLE, CLI},
          "the FTPS adapter shares with HTTPS only what both call in the domain, never each other's code"),
    Layer("cli", cli_modules(), WEB_FRAMEWORK | FTP_FRAMEWORK | S3_SDK,
          "the CLI starts the servers through their adapters' entry points, never through the frameworks"),
    Layer("csms", python_files(PACKAGE / "csms"),
          WEB_FRAMEWORK | FTP_FRAMEWORK | S3_SDK | PROMETHEUS | ADAPTERS | {SERVICES} | STORAGE_BACKENDS,
          "a CSMS connector translates between its CSMS and the domain's dispatch, like an adapter turned outward: "
          "it knows no other adapter and decides nothing"),
    Layer("client", python_files(PACKAGE / "client"),
          WEB_FRAMEWORK | FTP_FRAMEWORK | S3_SDK | PROMETHEUS | ADAPTERS | {SERVICES} | STORAGE_BACKENDS,
          "the typed client knows fwrepo by its wire format (repo_service.contract) alone, like any outside program"),
]

# Libraries that make HTTP requests. Only the typed client may call fwrepo with them; tests and benchmarks
# are independent clients on purpose, and these modules call something else.
HTTP_REQUESTS = {"httpx", "requests", "urllib3", "aiohttp", "urllib.request", "http.client"}
OTHER_HTTP_CALLERS = {
    PACKAGE / "domain" / "charger_certificates.py": "asks the operator's OCSP responder, not fwrepo",
    PACKAGE / "domain" / "outbound.py": "delivers webhooks to a CSMS's receiver, not to fwrepo",
    PACKAGE / "csms" / "citrineos.py": "sends UpdateFirmware through CitrineOS's REST API, not to fwrepo",
    ROOT / "examples" / "ocpp" / "charger.py": "a charger downloads its grant as libcurl does, knowing no client",
}
SHIPPED_MODULES = [module for place in (PACKAGE, ROOT / "ftps", ROOT / "examples") for module in python_files(place)]

# `fwrepo serve` and `fwrepo ftps` run the servers inside the CLI's process, so the CLI has to build
# and start them: these are the adapters' entry points for that. Everything else the CLI does goes
# through services and the domain (local administration) or through the typed client, like any
# other program (the remote commands), so it needs no other part of repo_service.http or ftps.
SERVER_ENTRY_POINTS = {
    Import("repo_service.http.app", "create_app"),
    Import("repo_service.http.server", "listen"),  # binds the HTTPS port before anything else starts
    Import("repo_service.http.server", "serve"),
    Import("ftps.server", "open_servers"),
    Import("ftps.server", "FtpsServers"),  # the type of what open_servers returns
}


@pytest.mark.parametrize("layer", LAYERS, ids=lambda layer: layer.name)
def test_every_layer_rule_checks_some_modules(layer: Layer) -> None:
    assert layer.files, f"no modules found for the {layer.name} layer: did it move?"


@pytest.mark.parametrize(
    ("layer", "module"),
    [(layer, module) for layer in LAYERS for module in layer.files],
    ids=lambda value: value.name if isinstance(value, Layer) else str(value.relative_to(ROOT)),
)
def test_a_layer_imports_nothing_it_must_not(layer: Layer, module: Path) -> None:
    refused = sorted({str(imported) for imported in imports(module) if imported.reaches(layer.forbidden)})
    assert not refused, f"{layer.why}; yet {module.relative_to(ROOT)} has: {refused}"


def test_the_cli_imports_of_http_and_ftps_only_what_starts_the_servers() -> None:
    used = {(module, imported) for module in cli_modules() for imported in imports(module)
            if imported.reaches({HTTP, FTPS})}
    beyond = sorted({str(imported) for _, imported in used if imported not in SERVER_ENTRY_POINTS})
    assert not beyond, f"the CLI takes more from the adapters than what starts the servers: {beyond}"
    # The server runtime is one job of the CLI: one module of it starts the servers.
    starting = sorted({str(module.relative_to(ROOT)) for module, _ in used})
    assert len(starting) == 1, f"the servers should be started by one module of the CLI, not {starting}"


@pytest.mark.parametrize("module", SHIPPED_MODULES, ids=lambda path: str(path.relative_to(ROOT)))
def test_no_module_but_the_typed_client_makes_http_requests(module: Path) -> None:
    # Issue 14: the CLI and the example CSMS call fwrepo through repo_service.client, so its retries,
    # errors and TLS options hold for every caller; an ad-hoc request would bypass them.
    if module.is_relative_to(PACKAGE / "client") or module in OTHER_HTTP_CALLERS:
        return
    refused = sorted({str(imported) for imported in imports(module) if imported.reaches(HTTP_REQUESTS)})
    assert not refused, f"{module.relative_to(ROOT)} makes HTTP requests of its own: {refused}; use repo_service.client"


def test_every_other_http_caller_still_is_one() -> None:
    stale = [str(module.relative_to(ROOT)) for module in OTHER_HTTP_CALLERS
             if not any(imported.reaches(HTTP_REQUESTS) for imported in imports(module))]
    assert not stale, f"no longer make HTTP requests, so no longer need leave: {stale}"


@pytest.mark.parametrize("module", python_files(TESTS), ids=lambda path: str(path.relative_to(TESTS)))
def test_no_test_module_imports_another_test_module_or_conftest(module: Path) -> None:
    # Shared builders and servers live in tests/support, so each test file reads on its own and
    # importing one test module never collects (or runs the fixtures of) another.
    refused = sorted({
        str(imported) for imported in imports(module)
        for target in imported.targets
        if target == "tests.conftest" or target.startswith("tests.test_")
        or target == "conftest" or target.startswith("test_")
    })
    assert not refused, refused


def _audit_writes(module: Path) -> list[str]:
    """Calls such as services.audit.record(...) or audit.append(...) in a module, by line."""
    found = []
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and node.func.attr in ("record", "append"):
            target = node.func.value
            name = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", "")
            if "audit" in name.lower():
                found.append(f"line {node.lineno}: {ast.unparse(node.func)}")
    return found


@pytest.mark.parametrize(
    "module", [module for layer in LAYERS if layer.name in ("http", "ftps", "cli") for module in layer.files],
    ids=lambda path: str(path.relative_to(ROOT)))
def test_adapters_never_write_audit_events(module: Path) -> None:
    # Each act is audited by the domain operation that performs it, in its transaction, exactly once:
    # an adapter that wrote one as well would audit twice, or outside the act's transaction.
    assert not _audit_writes(module), _audit_writes(module)
    assert not [imported for imported in imports(module) if imported == Import("repo_service.domain.audit", "Act")]
