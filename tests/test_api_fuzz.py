"""schemathesis, a fuzzer nobody here wrote, against a live `fwrepo serve`, driven by the served description alone.

Every operation with a key of every role (and with none), about two minutes
in all: no 5xx, and every reply's status code, content type, headers and body
as the description says. Each finding became a regular test where the
behaviour lives (tests/test_hostile_input.py names them).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.builds import image, published_build, unique_vendor
from tests.support.fwrepo import Fwrepo, start_fwrepo

SCHEMATHESIS = str(Path(sys.executable).with_name("st"))
# Seconds of fuzzing per role: admin may call everything, the others mostly meet 403s.
BUDGET = {"admin": 45, "release": 25, "csms": 25, None: 15}
# positive_data_acceptance expects every schema-valid body to be accepted; fwrepo refuses some on rules JSON
# Schema cannot state (a firmware id that does not exist is 422, a grant must outlive its retry plan, a Booted
# event needs firmware_version). Those refusals are 422 problem documents, which the other checks still verify.
EXCLUDED_CHECKS = "positive_data_acceptance"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fwrepo]:
    fwrepo = start_fwrepo(tmp_path_factory.mktemp("fuzzed"))
    yield fwrepo
    fwrepo.stop()


def _config(fwrepo: Fwrepo, directory: Path) -> Path:
    """Ids of things that exist, so that operations on one get past 404 (the fuzzer varies everything else)."""
    with fwrepo.client("admin") as admin:
        firmware = published_build(admin, unique_vendor(), "1.0.0", image(1000))
        grant = admin.post("/api/v1/grants", json={"firmware_id": firmware["id"], "charger_id": "CP-1"}).json()
        campaign = admin.post("/api/v1/campaigns", json={
            "firmware_id": firmware["id"], "chargers": [{"charger_id": "CP-2", "current_version": "0.9.0"}]}).json()
    token, filename = grant["location"].split("/d/", 1)[1].split("/", 1)
    config = directory / "schemathesis.toml"
    config.write_text("\n".join([
        "[parameters]",
        f'"path.firmware_id" = "{firmware["id"]}"',
        f'"path.grant_id" = {grant["id"]}',
        f'"path.campaign_id" = "{campaign["id"]}"',
        f'"path.token" = "{token}"',
        f'"path.filename" = "{filename}"',
    ]) + "\n")
    return config


@pytest.mark.slow
@pytest.mark.parametrize("role", list(BUDGET))
def test_schemathesis_finds_no_server_error_and_no_reply_outside_the_description(
    server: Fwrepo, role: str | None, tmp_path: Path
) -> None:
    authorization = ["-H", f"Authorization: Bearer {server.key(role)}"] if role else []
    result = subprocess.run(
        [SCHEMATHESIS, "--config-file", str(_config(server, tmp_path)), "run", f"{server.url}/api/v1/openapi.json",
         "--tls-verify", server.ca, *authorization, "--checks", "all", "--exclude-checks", EXCLUDED_CHECKS,
         "--max-time", str(BUDGET[role]), "--workers", "1", "--no-color"],
        cwd=tmp_path, capture_output=True, text=True, timeout=BUDGET[role] + 120,
    )
    assert result.returncode == 0, result.stdout[-20000:] + result.stderr[-3000:]
