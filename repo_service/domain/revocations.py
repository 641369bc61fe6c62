"""The one way grants end early: a CSMS revokes one, a build is yanked, a campaign is cancelled.

Each writes the rows in its caller's transaction; once that transaction commits, whoever remembers grants
(the downloads' status cache) is told, so that a revoked grant stops working on this node at once and on
every other node within the cache's few seconds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import event, update
from sqlalchemy.sql import ColumnElement
from sqlmodel import Session, col

from repo_service.db.models import Grant
from repo_service.domain.clock import Clock, utc_now

# Told the grant ids revoked, and the firmware whose state changed with them (a yank), after the commit.
Forget = Callable[[Sequence[int], str | None], None]


class Revocations:
    def __init__(self, clock: Clock = utc_now) -> None:
        self.clock = clock
        self.listeners: list[Forget] = []

    def revoke(self, session: Session, condition: ColumnElement[bool], reason: str,
               firmware_id: str | None = None) -> dict[int, str]:
        """Revoke the live grants that match, in the session's transaction; the tenant of each, by id (a yank
        revokes the grants of every tenant its build was shared with, and tells each)."""
        revoked: dict[int, str] = dict(session.execute(
            update(Grant).where(condition, col(Grant.revoked_at).is_(None))
            .values(revoked_at=self.clock(), revoke_reason=reason).returning(Grant.id, Grant.tenant)
        ).tuples().all())
        if revoked or firmware_id is not None:
            # After the commit, not before: a read between the two would cache the grant alive again.
            def forget(_: Any) -> None:
                for listener in self.listeners:
                    listener(list(revoked), firmware_id)

            event.listen(session, "after_commit", forget, once=True)
        return revoked
