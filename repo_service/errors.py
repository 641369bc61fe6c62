"""The domain's exceptions: one small hierarchy, mapped to replies in one place.

The HTTP adapter (``repo_service.http.problems``) and the CLI turn these into
problem details and exit codes; nothing below them knows about status codes.
"""

from __future__ import annotations


class FwrepoError(Exception):
    """Base of every error the domain raises on purpose."""


class InvalidInput(FwrepoError):
    """A value from outside is missing, malformed or out of bounds."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class TooLarge(InvalidInput):
    """A value or body is larger than the service accepts."""


class NotFound(FwrepoError):
    """The thing asked for does not exist (or the caller may not know it does)."""


class Conflict(FwrepoError):
    """The request contradicts what is already stored."""


class Unauthenticated(FwrepoError):
    """No credentials, or credentials that do not belong to a live client."""


class Forbidden(FwrepoError):
    """Valid credentials whose role does not allow the act."""


class QuotaExceeded(FwrepoError):
    """The act would take the tenant past one of its quotas (stored bytes, builds); nothing was done."""

    def __init__(self, quota: str, used: int, limit: int, message: str) -> None:
        super().__init__(message)
        self.quota = quota
        self.used = used
        self.limit = limit


class RateLimited(QuotaExceeded):
    """The act would pass a quota per unit of time (grants per minute); it fits again after retry_after seconds."""

    def __init__(self, quota: str, used: int, limit: int, retry_after: int, message: str) -> None:
        super().__init__(quota, used, limit, message)
        self.retry_after = retry_after


class TryLater(FwrepoError):
    """Refused for now, without looking at the request (a sign-in during its backoff); retry_after seconds on."""

    def __init__(self, retry_after: int, message: str) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class StorageUnavailable(FwrepoError):
    """The storage backend failed; nothing was stored."""


class SettingsError(FwrepoError):
    """A setting has a value the service cannot start with."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")
        self.name = name
