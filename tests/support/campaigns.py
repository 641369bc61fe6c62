"""Checks that hold for every campaign a test ran: its jobs.csv counts what its report counts."""

from __future__ import annotations

import csv
import io
from collections import Counter

from tests.support.fwrepo import Fwrepo


def csv_agrees_with_report(fwrepo: Fwrepo) -> None:
    """For each campaign on this server: as many chargers per job state, skipped and pending in both."""
    with fwrepo.client("csms") as csms:
        for campaign in csms.get("/api/v1/campaigns").json()["items"]:
            report = csms.get(f"/api/v1/campaigns/{campaign['id']}").json()
            rows = list(csv.DictReader(io.StringIO(csms.get(f"/api/v1/campaigns/{campaign['id']}/jobs.csv").text)))
            in_csv = Counter(row["state"] for row in rows)
            in_report = Counter(report["states"]) + Counter(
                {"skipped": sum(report["skipped"].values()), "pending": report["pending"]})
            assert +in_csv == +in_report and len(rows) == report["chargers"], (campaign["id"], in_csv, report)
            assert all(row["skip_reason"] for row in rows if row["state"] == "skipped"), campaign["id"]
