"""Prometheus metrics of one fwrepo process: HTTP requests from the middleware, the rest as observers of the domain."""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from repo_service.domain.downloads import DownloadAttempt
from repo_service.domain.update_jobs import JobState

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Firmware transfers take from a second on a LAN to an hour on a weak cellular link.
TRANSFER_BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.requests = Counter("fwrepo_http_requests", "HTTP requests by method, route and status",
                                ["method", "route", "status"], registry=registry)
        self.request_seconds = Histogram("fwrepo_http_request_duration_seconds",
                                         "Time to the end of the response, by route", ["route"], registry=registry)
        self.bytes_served = Counter("fwrepo_bytes_served", "Firmware bytes sent to chargers", ["protocol"],
                                    registry=registry)
        self.active_downloads = Gauge("fwrepo_active_downloads", "Firmware transfers in progress", ["protocol"],
                                      registry=registry)
        self.ftps_sessions = Gauge("fwrepo_ftps_sessions", "Open FTPS control connections", registry=registry)
        self.grants_issued = Counter("fwrepo_grants_issued", "Grants made", ["protocol"], registry=registry)
        self.refusals = Counter("fwrepo_refusals", "Downloads and logins refused, by reason",
                                ["protocol", "reason"], registry=registry)
        self.download_seconds = Histogram("fwrepo_download_duration_seconds", "Duration of each transfer",
                                          ["protocol"], buckets=TRANSFER_BUCKETS, registry=registry)
        self.upload_seconds = Histogram("fwrepo_upload_duration_seconds", "Duration of each firmware upload",
                                        buckets=TRANSFER_BUCKETS, registry=registry)
        self.campaign_jobs = Gauge("fwrepo_campaign_jobs", "Jobs of a campaign by state, as of its last report",
                                   ["campaign", "state"], registry=registry)

    # -- observers of the domain

    def issued(self, protocol: str, count: int) -> None:
        self.grants_issued.labels(protocol).inc(count)

    def transfer_began(self, protocol: str) -> None:
        self.active_downloads.labels(protocol).inc()

    def recorded(self, attempt: DownloadAttempt) -> None:
        if attempt.refusal is not None:
            self.refusals.labels(attempt.protocol, attempt.refusal.value).inc()
            return
        self.active_downloads.labels(attempt.protocol).dec()
        self.bytes_served.labels(attempt.protocol).inc(attempt.bytes_sent)
        self.download_seconds.labels(attempt.protocol).observe(attempt.duration_ms / 1000)

    def campaign_states(self, campaign_id: str, states: Mapping[str, int]) -> None:
        for state in JobState:  # every state, so one that emptied shows 0 rather than its last count
            self.campaign_jobs.labels(campaign_id, state.value).set(states.get(state.value, 0))

    def render(self) -> bytes:
        return generate_latest(self.registry)
