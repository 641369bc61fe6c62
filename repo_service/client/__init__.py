"""The typed Python client of fwrepo's HTTP API: `Fwrepo`, its replies (repo_service.contract) and errors.

The `fwrepo` CLI's remote commands and examples/ocpp/csms.py use it for every call; docs/client.md shows how.
"""

from repo_service.client.api import Fwrepo, Progress, Uploaded
from repo_service.client.errors import (
    Conflict, DigestMismatch, Forbidden, FwrepoError, Gone, InvalidInput, NotFound, QuotaExceeded, RateLimited,
    ServiceUnavailable, TooLarge, Unauthorized, Unreachable,
)

__all__ = [
    "Conflict", "DigestMismatch", "Forbidden", "Fwrepo", "FwrepoError", "Gone", "InvalidInput", "NotFound",
    "Progress", "QuotaExceeded", "RateLimited", "ServiceUnavailable", "TooLarge", "Unauthorized", "Unreachable", "Uploaded",
]
