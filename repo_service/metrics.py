"""Prometheus metrics of one fwrepo process: HTTP requests from the middleware, the rest as observers of the domain."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from sqlalchemy.exc import SQLAlchemyError

from repo_service.domain.downloads import DownloadAttempt
from repo_service.domain.quotas import Quota, Usage
from repo_service.domain.update_jobs import JobState

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Firmware transfers take from a second on a LAN to an hour on a weak cellular link.
TRANSFER_BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)


class TenantUse:
    """Each tenant's stored bytes, builds, grants of the last minute and quota limits, read from the database at
    each scrape: every node then reports the same, true figures, which no node's own count of what it did could."""

    def __init__(self, usage: Callable[[], Sequence[Usage]]) -> None:
        self.usage = usage

    def describe(self) -> list[Metric]:
        return []  # so that registering does not read the database

    def collect(self) -> Iterator[Metric]:
        try:
            usage = self.usage()
        except SQLAlchemyError as error:
            # The rest of the scrape still comes; readiness says the database is down.
            log.warning("tenant metrics left out: %s", error)
            return
        families = {
            "stored": GaugeMetricFamily("fwrepo_tenant_stored_bytes", "Bytes of the tenant's builds, yanked ones "
                                        "included", labels=["tenant"]),
            "builds": GaugeMetricFamily("fwrepo_tenant_builds", "Builds the tenant holds", labels=["tenant"]),
            "grants": GaugeMetricFamily("fwrepo_tenant_grants_last_minute", "Grants the tenant issued in the last "
                                        "60 s", labels=["tenant"]),
            "limits": GaugeMetricFamily("fwrepo_tenant_quota_limit", "The tenant's quotas that are set",
                                        labels=["tenant", "quota"]),
        }
        for use in usage:
            families["stored"].add_metric([use.tenant], use.stored_bytes)
            families["builds"].add_metric([use.tenant], use.builds)
            families["grants"].add_metric([use.tenant], use.grants_last_minute)
            for quota, limit in use.limits.items():
                if limit is not None:
                    families["limits"].add_metric([use.tenant, quota.value], limit)
        yield from families.values()


class Metrics:
    def __init__(self, tenant_usage: Callable[[], Sequence[Usage]]) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        registry.register(TenantUse(tenant_usage))
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
        self.quota_refusals = Counter("fwrepo_quota_refusals", "Uploads and grants a tenant's quota refused",
                                      ["tenant", "quota"], registry=registry)

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

    def quota_refused(self, tenant: str, quota: Quota) -> None:
        self.quota_refusals.labels(tenant, quota.value).inc()

    def campaign_states(self, campaign_id: str, states: Mapping[str, int]) -> None:
        for state in JobState:  # every state, so one that emptied shows 0 rather than its last count
            self.campaign_jobs.labels(campaign_id, state.value).set(states.get(state.value, 0))

    def render(self) -> bytes:
        return generate_latest(self.registry)
