"""Periodic work that every node runs a loop for, and exactly one node does each round: through the database."""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlmodel import col

from repo_service.db.models import Lease
from repo_service.db.session import Database

# Names this process in the lease table; only for people reading it.
HOLDER = f"node-{secrets.token_hex(4)}"


def take(database: Database, name: str, seconds: float, now: datetime) -> bool:
    """Whether this node holds the lease `name` for the next `seconds` (it had expired, or did not exist)."""
    until = now + timedelta(seconds=seconds)
    with database.session() as session:
        # A conditional update: of several nodes whose rounds come due together, one finds it expired.
        taken = session.execute(update(Lease).where(col(Lease.name) == name, col(Lease.until) <= now)
                                .values(holder=HOLDER, until=until)).rowcount
    if taken:
        return True
    try:
        with database.session() as session:
            session.add(Lease(name=name, holder=HOLDER, until=until))
    except IntegrityError:
        return False  # another node holds it, or made it first
    return True
