"""What a fwrepo call can end in besides its reply: problem documents (RFC 9457) as exceptions, one per kind.

Each reply's status picks the class; ``field`` names the input that was wrong on 422 and 413,
so a program can point at it. The message reads as the CLI prints it: "404 Not found: no firmware ...".
"""

from __future__ import annotations

import httpx
from pydantic import ValidationError

from repo_service.contract import PROBLEM_MEDIA_TYPE, Problem


class FwrepoError(Exception):
    """fwrepo refused the call (status, title, detail, field from its problem document), or was not reached."""

    def __init__(self, status: int | None, title: str, detail: str, field: str | None = None,
                 type: str | None = None) -> None:
        super().__init__(f"{status} {title}: {detail}" if status is not None else f"{title}: {detail}")
        self.status, self.title, self.detail, self.field, self.type = status, title, detail, field, type


class Unreachable(FwrepoError):
    """No reply: the connection failed or dropped, and retrying (where that was safe) did not help."""

    def __init__(self, url: str, error: Exception) -> None:
        super().__init__(None, f"cannot reach {url}", str(error) or type(error).__name__)


class DigestMismatch(FwrepoError):
    """A download's bytes are not the image they should be (length or SHA-256): the file was not kept."""

    def __init__(self, detail: str) -> None:
        super().__init__(None, "download corrupt", detail)


class Unauthorized(FwrepoError):
    """401: no API key, or one that belongs to no live client."""


class Forbidden(FwrepoError):
    """403: the key's role may not do this."""


class NotFound(FwrepoError):
    """404: no such thing (or a download URL that opens nothing)."""


class Conflict(FwrepoError):
    """409: the call contradicts what is stored (other bytes for a stored version, a published build...)."""


class Gone(FwrepoError):
    """410: a download link that was good and is no longer (expired, revoked, yanked, used up)."""


class InvalidInput(FwrepoError):
    """422: a value sent is missing, malformed or out of bounds; ``field`` names it."""


class TooLarge(InvalidInput):
    """413: a value or body larger than this fwrepo accepts."""


class RateLimited(FwrepoError):
    """429: the call would pass the tenant's grants per minute; ``retry_after`` is the seconds until it fits."""

    retry_after: int | None = None


class QuotaExceeded(FwrepoError):
    """507: the call would take the tenant past its stored bytes or builds quota; nothing was stored."""


class ServiceUnavailable(FwrepoError):
    """503: fwrepo (or its storage) cannot serve now; idempotent calls were retried first."""


BY_STATUS: dict[int, type[FwrepoError]] = {
    401: Unauthorized, 403: Forbidden, 404: NotFound, 409: Conflict, 410: Gone, 413: TooLarge, 422: InvalidInput,
    429: RateLimited, 503: ServiceUnavailable, 507: QuotaExceeded,
}


def error_from(reply: httpx.Response) -> FwrepoError:
    """The exception for an error reply: its problem document's, or the status and start of the body without one."""
    error = _error_from(reply)
    if isinstance(error, RateLimited) and reply.headers.get("retry-after", "").isdigit():
        error.retry_after = int(reply.headers["retry-after"])
    return error


def _error_from(reply: httpx.Response) -> FwrepoError:
    kind = BY_STATUS.get(reply.status_code, FwrepoError)
    if reply.headers.get("content-type", "").startswith((PROBLEM_MEDIA_TYPE, "application/json")):
        try:
            problem = Problem.model_validate_json(reply.read())
        except ValidationError:
            pass
        else:
            return kind(problem.status, problem.title, problem.detail, problem.field, problem.type)
    # A balancer or proxy in front of fwrepo answers in its own format.
    return kind(reply.status_code, reply.reason_phrase, reply.text[:200])
