"""A CSMS reporting what chargers said: one use case from the HTTP call to the wave decision.

Recording the events, deriving the jobs they touch (each once per batch) and letting their campaigns
halt, move on or finish happen in this one call, so that an adapter makes it and renders the result.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from repo_service.domain.audit import Performer
from repo_service.domain.campaigns import Campaigns
from repo_service.domain.update_jobs import Job, Recorded, UpdateJobs


class StatusEvents:
    def __init__(self, jobs: UpdateJobs, campaigns: Campaigns) -> None:
        self.jobs = jobs
        self.campaigns = campaigns

    def report(self, grant_id: int, document: Mapping[str, Any], by: Performer) -> tuple[bool, Job]:
        """One event for a grant: whether it was new (a duplicate changes nothing), and the job now. A firmware
        security event is audited as reported by `by`."""
        if not self.jobs.record(grant_id, document, by):
            return False, self.jobs.job(grant_id)
        return True, self.campaigns.settle([grant_id])[grant_id]

    def report_many(self, documents: Sequence[Any], by: Performer) -> Recorded:
        """Up to MAX_EVENTS events keyed by grant_id or request_id, all or nothing."""
        recorded = self.jobs.record_many(documents, by)
        if recorded.accepted:
            self.campaigns.settle(recorded.grant_ids)
        return recorded
