"""Status events from the CSMS, and the update jobs they add up to."""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from repo_service.contract import EventRecorded, EventsRecorded, Job as JobReply, StatusEvent, StatusEvents
from repo_service.domain.clients import Action
from repo_service.domain.clock import rfc3339
from repo_service.domain.update_jobs import MAX_EVENTS, Job
from repo_service.errors import InvalidInput
from repo_service.http.auth import authorize
from repo_service.http.bodies import json_object
from repo_service.http.grants import GRANT_ID, grant_id_from
from repo_service.http.operations import conforming, operation, reply

# 10,000 events of about 150 bytes each, with room to spare; long status_info goes in smaller batches.
MAX_EVENTS_BODY = 4 * 1024 * 1024


def job_json(job: Job) -> dict[str, Any]:
    return {
        "state": job.state.value,
        "final": job.final,
        "timeline": {
            "granted": rfc3339(job.granted_at),
            "first_byte": rfc3339(job.first_byte_at) if job.first_byte_at else None,
            "last_byte": rfc3339(job.last_byte_at) if job.last_byte_at else None,
            "boot_confirmed": rfc3339(job.booted_at) if job.booted_at else None,
        },
        "download_seconds": job.download_seconds,
        "completion_seconds": job.completion_seconds,
        "events": [
            {"status": event.status, "timestamp": rfc3339(event.timestamp), "info": event.info,
             "status_info": {"reason_code": event.status_info.reason_code,
                             "additional_info": event.status_info.additional_info} if event.status_info else None,
             "notification": event.notification, "firmware_version": event.firmware_version}
            for event in job.events
        ],
    }


@operation(operation_id="reportStatusEvent", summary="Report a charger's firmware status for its grant", tag="jobs",
           action=Action.GRANT, parameters=(GRANT_ID,), request=StatusEvent,
           replies={201: EventRecorded, 200: EventRecorded}, errors={404: "no such grant"},
           description="200: the same event was reported before (duplicate true); nothing changed.")
async def record_event(request: Request) -> Response:
    actor = await authorize(request, Action.GRANT)
    grant_id = grant_id_from(request)
    document = await json_object(request)
    # Checked here, before the domain records it: the domain's own checks come after and name the field too.
    conforming(StatusEvent, document)
    new, job = await run_in_threadpool(request.app.state.services.status_events.report, grant_id, document,
                                       actor.performer)
    return reply(EventRecorded, {"grant_id": grant_id, "duplicate": not new, "job": job_json(job)}, 201 if new else 200)


@operation(operation_id="reportStatusEvents", summary="Report many status events, each naming its grant", tag="jobs",
           action=Action.GRANT, request=StatusEvents, replies={200: EventsRecorded})
async def record_events(request: Request) -> Response:
    actor = await authorize(request, Action.GRANT)
    document = await json_object(request, MAX_EVENTS_BODY)
    events = document.get("events")
    if not isinstance(events, list) or not events:
        raise InvalidInput("events", f"must be a non-empty list of at most {MAX_EVENTS} events")
    conforming(StatusEvents, document)
    recorded = await run_in_threadpool(request.app.state.services.status_events.report_many, events,
                                       actor.performer)
    return reply(EventsRecorded, {"accepted": recorded.accepted, "duplicates": recorded.duplicates})


@operation(operation_id="getJob", summary="The update job of a grant: state, timeline, events", tag="jobs",
           action=Action.GRANT, parameters=(GRANT_ID,), replies={200: JobReply}, errors={404: "no such grant"})
async def show_job(request: Request) -> Response:
    await authorize(request, Action.GRANT)
    job = await run_in_threadpool(request.app.state.services.jobs.job, grant_id_from(request))
    return reply(JobReply, job_json(job))


ROUTES = [
    Route("/api/v1/grants/{grant_id}/events", record_event, methods=["POST"]),
    Route("/api/v1/grants/{grant_id}/job", show_job, methods=["GET"]),
    Route("/api/v1/events", record_events, methods=["POST"]),
]
