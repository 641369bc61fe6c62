"""Which tenant a piece of work acts in, and how every database session is held to it.

Work runs in a scope: one tenant's name (the tenant of the API key calling, or the one an operator names
on the command line), or EVERY_TENANT for the service's own rounds across tenants (ticking campaigns,
sending webhooks, serving downloads by token), which then act in each row's tenant. A session takes the
scope it is opened in, and three things follow from it, so that a query written without a tenant filter
still shows nothing of another tenant:

- every ORM statement on a tenant's table (a model with a ``tenant`` column) gets ``tenant = scope``
  (SQLAlchemy's ``with_loader_criteria``), on SQLite and PostgreSQL alike; except that a plain read of a
  shared table (a model with ``__shared_statuses__``: firmware) also sees the rows, in those states, of the
  tenants that share their catalog with the scope (``tenant_share``, ``fwrepo tenants share``). An UPDATE, a
  DELETE, a SELECT ... FOR UPDATE (a read that leads to a change, which PostgreSQL holds to the UPDATE policy
  as well) and a read marked ``own_rows`` see the scope's own rows only, so a shared build is read, granted
  and campaigned by its receivers and changed by its own tenant alone;
- a new row takes the scope's tenant; in EVERY_TENANT's scope a row must name its own, or the insert fails;
- on PostgreSQL each transaction sets ``fwrepo.tenant``, and row-level security policies (migration 0017)
  let through only rows of that tenant (reads of firmware also the shared ones, migration 0020): a connection
  that never set it sees no tenant's rows at all.

Work outside any scope acts in the default tenant: what a single operator's installation always did. An act
that must reach into other tenants and still commit whole (a yank revoking every receiver's grants, each told on
its own trail) moves its session to another scope for a block of its transaction (``acting_in_transaction``),
deliberately and visibly.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import cache
from typing import Any, TypeVar

from sqlalchemy import Column, Executable, ForeignKey, String, and_, column, event, or_, select, table, text
from sqlalchemy.orm import ORMExecuteState, Session, with_loader_criteria
from sqlmodel import Session as ModelSession
from sqlmodel import SQLModel

DEFAULT_TENANT = "default"
# Not a tenant name (those are DNS labels): the scope of work that reads every tenant's rows.
EVERY_TENANT = "*"
# The PostgreSQL setting the row-level security policies read.
SETTING = "fwrepo.tenant"
_INFO_KEY = "fwrepo.tenant"
_OWN_ROWS = "fwrepo_own_rows"
Statement = TypeVar("Statement", bound=Executable)
# models.TenantShare, named as a bare table: the models import this module.
_SHARES = table("tenant_share", column("source"), column("target"))

_scope: ContextVar[str] = ContextVar("fwrepo_tenant_scope", default=DEFAULT_TENANT)


@contextmanager
def acting_in(tenant: str) -> Iterator[None]:
    """Sessions opened inside the block act in tenant (or in every tenant, for EVERY_TENANT)."""
    token = _scope.set(tenant)
    try:
        yield
    finally:
        _scope.reset(token)


def enter(tenant: str) -> None:
    """Act in tenant for the rest of the current task: a request's, as asyncio gives each request a task (and
    a copy of the context) of its own, which the threads it hands work to inherit."""
    _scope.set(tenant)


def current_scope() -> str:
    return _scope.get()


def tenant_column(primary_key: bool = False) -> Any:
    """The ``tenant`` column of a tenant's table: filled from the session's scope when a new row leaves it out."""
    return Column(String(63), ForeignKey("tenant.name"), nullable=False, index=not primary_key,
                  primary_key=primary_key, default=_tenant_of_new_row)


def _tenant_of_new_row(context: Any) -> str:
    tenant = context.connection.info.get(_INFO_KEY, DEFAULT_TENANT)
    if tenant == EVERY_TENANT:
        table = context.compiled.statement.table.name if context.compiled is not None else "a table"
        raise ValueError(f"a row of {table} made in every tenant's scope must name its tenant")
    return tenant


@cache
def tenanted_models() -> tuple[type[SQLModel], ...]:
    """The models whose rows belong to one tenant: those with a tenant column."""
    return tuple(mapper.class_ for mapper in SQLModel._sa_registry.mappers  # type: ignore[attr-defined]
                 if "tenant" in mapper.columns)


# The same, as execution options, for Session.get.
OWN_ROWS = {_OWN_ROWS: True}


def own_rows(statement: Statement) -> Statement:
    """statement, held to the scope's own rows even on a table other tenants share into it: for a read whose
    answer only the scope's own rows may give (is this version taken here already?)."""
    return statement.execution_options(**{_OWN_ROWS: True})


def open_session(bind: Any) -> ModelSession:
    """A session held to the current scope (see the module's docstring)."""
    session = ModelSession(bind, expire_on_commit=False)
    session.info[_INFO_KEY] = current_scope()
    return session


@contextmanager
def acting_in_transaction(session: Session, tenant: str) -> Iterator[None]:
    """For the block, session acts in tenant (or every tenant), inside the transaction it has begun, then goes
    back to its own scope: for one act that reaches into other tenants and must commit whole with the rest
    (a yank revoking the grants of every tenant it was shared with, each on its own trail; a share ended)."""
    previous = session.info[_INFO_KEY]
    # What was written so far is flushed in the scope it was written in.
    session.flush()
    connection = session.connection()
    with acting_in(tenant):
        _hold(session, connection, tenant)
        try:
            yield
            session.flush()
        except BaseException:
            # The caller rolls the transaction back; a failed one on PostgreSQL takes no more statements.
            session.info[_INFO_KEY] = connection.info[_INFO_KEY] = previous
            raise
        _hold(session, connection, previous)


@event.listens_for(Session, "after_begin")
def _begin_in_scope(session: Session, _transaction: Any, connection: Any) -> None:
    if _INFO_KEY in session.info:
        _hold(session, connection, session.info[_INFO_KEY])


def _hold(session: Session, connection: Any, tenant: str) -> None:
    session.info[_INFO_KEY] = connection.info[_INFO_KEY] = tenant
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT set_config(:setting, :tenant, true)"), {"setting": SETTING, "tenant": tenant})


@event.listens_for(Session, "do_orm_execute")
def _only_its_tenant(state: ORMExecuteState) -> None:
    tenant = state.session.info.get(_INFO_KEY)
    if tenant is None or tenant == EVERY_TENANT or state.is_column_load or state.is_relationship_load:
        return
    if state.is_select or state.is_update or state.is_delete:
        shared = (state.is_select and state.statement._for_update_arg is None
                  and not state.execution_options.get(_OWN_ROWS, False))
        state.statement = state.statement.options(*(
            with_loader_criteria(model, _criteria(model, tenant, shared), include_aliases=True)
            for model in tenanted_models()))


def _criteria(model: Any, tenant: str, shared: bool) -> Any:
    # Expressions of the model itself, not lambdas: SQLAlchemy caches a lambda's criteria by where it is written,
    # and gave one model's shared statuses to the next (a receiver saw the maker's keys but not its builds).
    statuses = getattr(model, "__shared_statuses__", None)
    if not shared or statuses is None:
        return model.tenant == tenant
    return or_(model.tenant == tenant, and_(
        model.status.in_(statuses), model.tenant.in_(select(_SHARES.c.source).where(_SHARES.c.target == tenant))))
