"""A client generated from the committed docs/openapi.json by a tool nobody here wrote (openapi-python-client)
uploads, publishes and issues a grant: the description is enough to integrate with fwrepo."""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from tests.support.builds import image, unique_vendor
from tests.support.fwrepo import Fwrepo

GENERATOR = Path(sys.executable).with_name("openapi-python-client")
DESCRIPTION = Path(__file__).parent.parent / "docs" / "openapi.json"


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    if not GENERATOR.exists():
        pytest.skip(f"{GENERATOR} is not installed: pip install -e '.[test]' brings openapi-python-client")
    directory = tmp_path_factory.mktemp("generated")
    result = subprocess.run([str(GENERATOR), "generate", "--path", str(DESCRIPTION), "--meta", "none"],
                            cwd=directory, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and (directory / "fwrepo_client").is_dir(), result.stdout + result.stderr
    sys.path.insert(0, str(directory))
    try:
        yield importlib.import_module("fwrepo_client")
    finally:
        sys.path.remove(str(directory))
        for name in [name for name in sys.modules if name.startswith("fwrepo_client")]:
            del sys.modules[name]
        shutil.rmtree(directory, ignore_errors=True)


def test_a_generated_client_uploads_publishes_and_issues_a_grant(fwrepo: Fwrepo, generated: ModuleType) -> None:
    from fwrepo_client import AuthenticatedClient
    from fwrepo_client.api.firmware import publish_firmware, upload_firmware
    from fwrepo_client.api.grants import issue_grant
    from fwrepo_client.models import Firmware, FirmwareStatus, Grant, GrantRequest, UploadForm
    from fwrepo_client.types import File

    content = image(4096)

    def client(role: str) -> AuthenticatedClient:
        return AuthenticatedClient(base_url=fwrepo.url, token=fwrepo.key(role), verify_ssl=fwrepo.tls())

    with client("release") as release, client("csms") as csms:
        uploaded = upload_firmware.sync(client=release, body=UploadForm(
            file=File(payload=content, file_name="image.bin", mime_type="application/octet-stream"),
            vendor=unique_vendor(), models=["AC22"], version="1.2.3"))
        assert isinstance(uploaded, Firmware), uploaded
        assert uploaded.size == len(content) and uploaded.status == FirmwareStatus.UPLOADED
        published = publish_firmware.sync(uploaded.id, client=release)
        assert isinstance(published, Firmware) and published.status == FirmwareStatus.PUBLISHED, published
        grant = issue_grant.sync(client=csms, body=GrantRequest(firmware_id=published.id, charger_id="CP-generated"))
        assert isinstance(grant, Grant), grant
        assert grant.ocpp.update_firmware.location == grant.location
    with fwrepo.client(None) as charger:
        assert charger.get(grant.location).content == content
