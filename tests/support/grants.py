"""A grant for a charger to fetch a published build, as the CSMS asks for one."""

from __future__ import annotations

from tests.support.builds import published_build, unique_vendor
from tests.support.fwrepo import Fwrepo


def grant_for(fwrepo: Fwrepo, content: bytes, **grant: object) -> tuple[dict, dict]:
    """Upload, publish and grant content to charger CP-7 (grant's fields added); the firmware record and the grant."""
    with fwrepo.client("release") as release, fwrepo.client("csms") as csms:
        firmware = published_build(release, unique_vendor(), "1.0.0", content)
        reply = csms.post("/api/v1/grants", json={"firmware_id": firmware["id"], "charger_id": "CP-7", **grant})
        assert reply.status_code == 201, reply.text
        return firmware, reply.json()
