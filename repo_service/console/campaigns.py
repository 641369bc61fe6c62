"""Campaigns in the console: the list, a form that starts one from a CSV of chargers, and a campaign's page,
which keeps itself up to date while the campaign runs, and its pause, resume and cancel."""

from __future__ import annotations

import re
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from repo_service.console import plots
from repo_service.console.catalog import offset_of
from repo_service.console.rendering import View, markup, page, see_other
from repo_service.console.sessions import console_page
from repo_service.domain.campaigns import (
    CHARGER_COLUMNS, DISPATCHES, CampaignStatus, chargers_from_csv, parse_campaign_request,
)
from repo_service.domain.catalog import CatalogFilter, Status
from repo_service.domain.clients import Action, Actor
from repo_service.domain.update_jobs import FAILURES, JobState
from repo_service.errors import InvalidInput

MEMBERS_PAGE = 50
# A CSV of 100,000 chargers with every column is about 10 MB; ConsoleGuard bounds the whole form a little above.
MAX_CSV_BYTES = 16 * 1024 * 1024
FINAL = {CampaignStatus.COMPLETED.value, CampaignStatus.CANCELLED.value, CampaignStatus.HALTED.value}
STEERING = {CampaignStatus.RUNNING.value: ("pause", "cancel"), CampaignStatus.PAUSED.value: ("resume", "cancel"),
            CampaignStatus.HALTED.value: ("cancel",)}
_CHARGER_FIELD = re.compile(r"chargers\[(\d+)\]\.(\w+)")
PROTOCOLS = ("https", "ftps")
BIG_CAMPAIGN = 10_000
ENDED = {JobState.SUCCEEDED.value, *(state.value for state in FAILURES)}
STATE_FILTERS = (*(state.value for state in JobState), "pending", "skipped")


@console_page(Action.GRANT)
async def campaigns(request: Request, actor: Actor) -> Response:
    services = request.app.state.services
    listed = await run_in_threadpool(services.campaigns.list)
    builds = {campaign.firmware_id for campaign in listed}
    names = {}
    for firmware_id in builds:
        record = await run_in_threadpool(services.catalog.granted, firmware_id)
        names[firmware_id] = f"{record.vendor} {record.version}"
    return page(request, "campaigns.html", section="campaigns", campaigns=listed, names=names)


async def _published(request: Request) -> list[Any]:
    found = await run_in_threadpool(request.app.state.services.catalog.list, CatalogFilter(status=Status.PUBLISHED),
                                    200, 0)
    return found.items


def _form_page(request: Request, builds: list[Any], values: dict[str, str], status: int = 200,
               message: str | None = None) -> Response:
    return page(request, "campaign_new.html", status, section="campaigns", builds=builds, values=values,
                message=message, columns=CHARGER_COLUMNS, dispatches=DISPATCHES, protocols=PROTOCOLS)


@console_page(Action.GRANT)
async def new_campaign(request: Request, actor: Actor) -> Response:
    values = {"firmware_id": request.query_params.get("firmware", ""), "waves": "1%, 10%, 100%",
              "failure_threshold": "10", "protocol": "https", "dispatch": "csms"}
    return _form_page(request, await _published(request), values)


def campaign_document(values: dict[str, str], csv_text: str) -> dict[str, Any]:
    """The form's fields as the API's campaign request (repo_service.domain.campaigns.parse_campaign_request)."""
    document: dict[str, Any] = {"firmware_id": values.get("firmware_id", ""), "chargers": chargers_from_csv(csv_text),
                                "protocol": values.get("protocol", "https"),
                                "dispatch": values.get("dispatch", "csms")}
    waves = [part.strip() for part in values.get("waves", "").split(",") if part.strip()]
    if waves:
        document["waves"] = [int(wave) if wave.isdigit() else wave for wave in waves]
    thresholds = [part.strip().rstrip("%") for part in values.get("failure_threshold", "").split(",") if part.strip()]
    if thresholds:
        try:
            shares = [float(value) / 100 for value in thresholds]
        except ValueError:
            raise InvalidInput("failure_threshold", "must be a percentage, or one per wave separated by commas, "
                               f"got {values['failure_threshold'][:40]!r}") from None
        document["failure_threshold"] = shares[0] if len(shares) == 1 else shares
    start, end = values.get("window_start", ""), values.get("window_end", "")
    if start or end:
        document["window"] = {"start": start, "end": end}
    for name in ("retries", "retry_interval"):
        if values.get(name, ""):
            if not values[name].isdigit() or len(values[name]) > 9:
                raise InvalidInput(name, f"must be a whole number, got {values[name][:20]!r}")
            document[name] = int(values[name])
    return document


def _where(error: InvalidInput) -> str:
    """An error about the n-th charger, as the line and column of the CSV it came from."""
    found = _CHARGER_FIELD.fullmatch(error.field)
    if found is None:
        return str(error)
    return f"chargers CSV, line {int(found.group(1)) + 2}, column {found.group(2)}: {error.message}"


@console_page(Action.GRANT)
async def create_campaign(request: Request, actor: Actor) -> Response:
    # console_page read the form (the CSV spooled to disk, bounded by ConsoleGuard) and checked its token.
    form = await request.form()
    values = {name: value.strip() for name, value in form.multi_items() if isinstance(value, str) and name != "csrf"}
    builds = await _published(request)
    upload = form.get("chargers")
    try:
        if not isinstance(upload, UploadFile) or not upload.filename:
            raise InvalidInput("chargers", "choose a CSV file of the chargers to update")
        raw = await upload.read(MAX_CSV_BYTES + 1)
        if len(raw) > MAX_CSV_BYTES:
            raise InvalidInput("chargers", f"the CSV is larger than {MAX_CSV_BYTES // (1024 * 1024)} MiB")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidInput("chargers", "the CSV must be UTF-8 text") from None
        campaigns_service = request.app.state.services.campaigns
        report = await run_in_threadpool(
            lambda: campaigns_service.create(parse_campaign_request(campaign_document(values, text)), actor.performer))
    except InvalidInput as error:
        return _form_page(request, builds, values, 422, _where(error))
    return see_other(f"/campaigns/{report.id}")


async def _campaign_view(request: Request) -> dict[str, Any]:
    """What a campaign's page and its live region show: the report (from the stored job states, summed by the
    database), its plots, and one page of its chargers."""
    services = request.app.state.services
    campaign_id = request.path_params["campaign_id"]
    state = request.query_params.get("state") or None
    offset = offset_of(request)
    report, timings = await run_in_threadpool(services.campaigns.overview, campaign_id)
    members, matching = await run_in_threadpool(
        lambda: services.campaigns.members(campaign_id, offset=offset, limit=MEMBERS_PAGE, state=state))
    build = await run_in_threadpool(services.catalog.granted, report.firmware_id)
    eligible = sum(wave.chargers for wave in report.waves)
    finished = report.summary.finished
    return {
        "campaign": report, "build": build, "eligible": eligible, "finished": finished,
        "final": report.status in FINAL, "steering": STEERING.get(report.status, ()),
        "download_plot": markup(plots.histogram(timings.download_seconds, title="Download time")),
        "completion_plot": markup(plots.histogram(timings.completion_seconds, title="Time to complete")),
        "progress_plot": markup(plots.progress(timings.progress, eligible, title="Progress over time")),
        # A wave's chargers whose job ended, well or not: its bar.
        "wave_done": {wave.number: sum(count for name, count in wave.states.items() if name in ENDED)
                      for wave in report.waves},
        "members": members, "matching": matching, "state": state or "", "offset": offset,
        "page_size": MEMBERS_PAGE, "states": STATE_FILTERS,
        # A big campaign's page costs the server most of a second to make: it is fetched again less often.
        "interval": 2000 if report.chargers < BIG_CAMPAIGN else 10_000,
    }


@console_page(Action.GRANT)
async def campaign(request: Request, actor: Actor) -> Response:
    return page(request, "campaign.html", section="campaigns", **await _campaign_view(request))


@console_page(Action.GRANT)
async def live(request: Request, actor: Actor) -> Response:
    """The part of the campaign's page that changes, which its script fetches every few seconds."""
    return page(request, "campaign_live.html", **await _campaign_view(request))


def steer(action: str) -> View:
    @console_page(Action.GRANT)
    async def steering(request: Request, actor: Actor) -> Response:
        campaign_id = request.path_params["campaign_id"]
        await run_in_threadpool(request.app.state.services.campaigns.set_status, campaign_id, action,
                                actor.performer)
        return see_other(f"/campaigns/{campaign_id}")

    return steering


ROUTES = [
    Route("/campaigns", campaigns, methods=["GET"]),
    Route("/campaigns/new", new_campaign, methods=["GET"]),
    Route("/campaigns/new", create_campaign, methods=["POST"]),
    Route("/campaigns/{campaign_id}", campaign, methods=["GET"]),
    Route("/campaigns/{campaign_id}/live", live, methods=["GET"]),
    *(Route(f"/campaigns/{{campaign_id}}/{action}", steer(action), methods=["POST"])
      for action in ("pause", "resume", "cancel")),
]
