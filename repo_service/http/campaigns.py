"""Campaigns over HTTP: staged rollouts a CSMS starts, pulls due grants from, and watches."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from repo_service.contract import CampaignList, CampaignReport as CampaignReply, CampaignRequest, DueGrants, FirmwareStats
from repo_service.domain.campaigns import (
    DUE_PAGE, MAX_DUE_PAGE, CampaignMemberRow, CampaignReport, JobSummary, parse_campaign_request,
)
from repo_service.domain.clients import Action
from repo_service.domain.clock import rfc3339
from repo_service.errors import InvalidInput
from repo_service.http.auth import authorize
from repo_service.http.bodies import json_object
from repo_service.http.firmware import query_int
from repo_service.http.grants import ISSUE_ERRORS, grant_json
from repo_service.http.operations import Content, Parameter, conforming, operation, reply
from repo_service.http.urls import path_id

# 100,000 chargers of about 120 bytes each.
MAX_CAMPAIGN_BODY = 16 * 1024 * 1024
CSV_COLUMNS = ("charger_id", "wave", "grant_id", "state", "skip_reason", "current_version", "first_byte", "last_byte",
               "boot_confirmed", "download_seconds", "completion_seconds", "bytes_served")
# Rows per piece of a streamed jobs.csv: about 150 KB.
CSV_ROWS_PER_CHUNK = 1_000


def summary_json(summary: JobSummary) -> dict[str, Any]:
    return {
        "jobs": summary.jobs,
        "states": summary.states,
        "finished": summary.finished,
        "success_rate": summary.success_rate,
        "download_seconds": summary.download_seconds,
        "completion_seconds": summary.completion_seconds,
        "bytes_served": summary.bytes_served,
    }


def report_json(report: CampaignReport) -> dict[str, Any]:
    return {
        "id": report.id,
        "firmware_id": report.firmware_id,
        "status": report.status,
        "status_reason": report.status_reason,
        "current_wave": report.current_wave,
        "created_at": rfc3339(report.created_at),
        "chargers": report.chargers,
        "skipped": report.skipped,
        "pending": report.pending,
        "dispatch": report.dispatch,
        "dispatches": report.dispatches,
        **summary_json(report.summary),
        "waves": [
            {"wave": wave.number, "chargers": wave.chargers, "states": wave.states,
             "failure_rate": wave.failure_rate, "failure_threshold": wave.threshold}
            for wave in report.waves
        ],
    }


def _campaign_id(request: Request) -> str:
    return path_id(request, "campaign_id", "campaign")


CAMPAIGN_ID = Parameter("campaign_id", "path", "the campaign's id",
                        {"type": "string", "pattern": "^[0-9a-f]{16}$"}, required=True)
_NO_CAMPAIGN = {404: "no such campaign"}


@operation(operation_id="createCampaign", summary="Start a staged rollout of one build to many chargers",
           tag="campaigns", action=Action.GRANT, request=CampaignRequest, replies={201: CampaignReply},
           errors=ISSUE_ERRORS)
async def create(request: Request) -> Response:
    actor = await authorize(request, Action.GRANT)
    document = await json_object(request, MAX_CAMPAIGN_BODY)
    # The domain checks first and names what is wrong in its words; the model then holds the body to the description.
    campaign_request = parse_campaign_request(document)
    conforming(CampaignRequest, document)
    report = await run_in_threadpool(request.app.state.services.campaigns.create, campaign_request, actor.performer)
    return reply(CampaignReply, report_json(report), 201, {"Location": f"/api/v1/campaigns/{report.id}"})


@operation(operation_id="listCampaigns", summary="Every campaign, newest first", tag="campaigns", action=Action.GRANT,
           replies={200: CampaignList})
async def list_campaigns(request: Request) -> Response:
    await authorize(request, Action.GRANT)
    campaigns = await run_in_threadpool(request.app.state.services.campaigns.list)
    return reply(CampaignList, {"items": [
        {"id": campaign.id, "firmware_id": campaign.firmware_id, "status": campaign.status,
         "current_wave": campaign.current_wave + 1, "waves": len(campaign.wave_ends),
         "created_at": rfc3339(campaign.created_at)}
        for campaign in campaigns
    ]})


@operation(operation_id="getCampaign", summary="A campaign's report: waves, states, timings", tag="campaigns",
           action=Action.GRANT, parameters=(CAMPAIGN_ID,), replies={200: CampaignReply}, errors=_NO_CAMPAIGN)
async def show(request: Request) -> Response:
    await authorize(request, Action.GRANT)
    report = await run_in_threadpool(request.app.state.services.campaigns.report, _campaign_id(request))
    return reply(CampaignReply, report_json(report))


@operation(operation_id="takeDueGrants", summary="The campaign's grants that became due, each handed out once",
           tag="campaigns", action=Action.GRANT, replies={200: DueGrants}, errors=_NO_CAMPAIGN, parameters=(
               CAMPAIGN_ID,
               Parameter("due", "query", "now: the grants whose retrieve_date has come",
                         {"type": "string", "enum": ["now"]}, required=True),
               Parameter("limit", "query", "grants per page",
                         {"type": "integer", "minimum": 1, "maximum": MAX_DUE_PAGE, "default": DUE_PAGE})),
           description="Not idempotent: a grant handed out is not handed out again; call until grants is empty.")
async def due_grants(request: Request) -> Response:
    await authorize(request, Action.GRANT)
    if request.query_params.get("due") != "now":
        raise InvalidInput("due", "only due=now is supported: the grants whose retrieve_date has come")
    services = request.app.state.services
    campaign_id = _campaign_id(request)
    grants = await run_in_threadpool(services.campaigns.due, campaign_id, query_int(request, "limit", DUE_PAGE))
    firmware = await run_in_threadpool(services.catalog.granted, grants[0].firmware_id) if grants else None
    return reply(DueGrants, {"campaign_id": campaign_id,
                             "grants": [grant_json(grant, firmware) for grant in grants] if firmware else []})


@operation(operation_id="exportCampaignJobs", summary="One CSV row per charger of the campaign", tag="campaigns",
           action=Action.GRANT, parameters=(CAMPAIGN_ID,), errors=_NO_CAMPAIGN, replies={
               200: Content(f"columns: {', '.join(CSV_COLUMNS)}", "text/csv",
                            {"type": "string"}, {"Content-Disposition": "attachment; filename=campaign-ID.csv"})})
async def jobs_csv(request: Request) -> Response:
    await authorize(request, Action.GRANT)
    campaign_id = _campaign_id(request)
    # Looked up before the reply starts (an unknown campaign is still a 404), then read and sent a chunk at a time.
    rows = await run_in_threadpool(request.app.state.services.campaigns.member_rows, campaign_id)
    return StreamingResponse(_csv_chunks(rows), media_type="text/csv; charset=utf-8",
                             headers={"Content-Disposition": f'attachment; filename="campaign-{campaign_id}.csv"'})


def _csv_chunks(rows: Iterator[CampaignMemberRow]) -> Iterator[str]:
    """The CSV in pieces of CSV_ROWS_PER_CHUNK rows (Starlette iterates a plain iterator in a worker thread)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for count, row in enumerate(rows, 1):
        writer.writerow(_cell(value) for value in [
            row.charger_id, row.wave or "", row.grant_id or "", row.listed_state, row.skip_reason or "",
            row.current_version,
            rfc3339(row.first_byte_at) if row.state and row.first_byte_at else "",
            rfc3339(row.last_byte_at) if row.state and row.last_byte_at else "",
            rfc3339(row.booted_at) if row.state and row.booted_at else "",
            row.download_seconds if row.state and row.download_seconds is not None else "",
            row.completion_seconds if row.state and row.completion_seconds is not None else "",
            row.bytes_served if row.state else "",
        ])
        if count % CSV_ROWS_PER_CHUNK == 0:
            yield out.getvalue()
            out.seek(0)
            out.truncate()
    yield out.getvalue()


@operation(operation_id="getFirmwareStats", summary="What the campaigns of one build add up to", tag="campaigns",
           action=Action.GRANT, replies={200: FirmwareStats}, errors={404: "no such build"})
async def firmware_stats(request: Request) -> Response:
    await authorize(request, Action.GRANT)
    firmware_id = request.path_params["firmware_id"]
    summary, campaigns = await run_in_threadpool(request.app.state.services.campaigns.firmware_stats, firmware_id)
    return reply(FirmwareStats, {"firmware_id": firmware_id, "campaigns": campaigns, **summary_json(summary)})


def _cell(value: object) -> object:
    # A charger id such as "=HYPERLINK(...)" must stay text when the export is opened in a spreadsheet.
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


_STEERING = {"pause": "Pause a campaign", "resume": "Resume a campaign",
             "cancel": "Cancel a campaign: every grant no charger has finished downloading is revoked"}


def _action(action: str):  # type: ignore[no-untyped-def]
    @operation(operation_id=f"{action}Campaign", summary=_STEERING[action], tag="campaigns", action=Action.GRANT,
               parameters=(CAMPAIGN_ID,), replies={200: CampaignReply},
               errors={**_NO_CAMPAIGN, 409: "not possible in the campaign's state"}, description="A body is ignored.")
    async def act(request: Request) -> Response:
        actor = await authorize(request, Action.GRANT)
        report = await run_in_threadpool(request.app.state.services.campaigns.set_status, _campaign_id(request), action,
                                         actor.performer)
        return reply(CampaignReply, report_json(report))

    return act


ROUTES = [
    Route("/api/v1/campaigns", create, methods=["POST"]),
    Route("/api/v1/campaigns", list_campaigns, methods=["GET"]),
    Route("/api/v1/campaigns/{campaign_id}", show, methods=["GET"]),
    Route("/api/v1/campaigns/{campaign_id}/grants", due_grants, methods=["GET"]),
    Route("/api/v1/campaigns/{campaign_id}/jobs.csv", jobs_csv, methods=["GET"]),
    Route("/api/v1/firmware/{firmware_id}/stats", firmware_stats, methods=["GET"]),
    *(Route(f"/api/v1/campaigns/{{campaign_id}}/{action}", _action(action), methods=["POST"])
      for action in ("pause", "resume", "cancel")),
]
