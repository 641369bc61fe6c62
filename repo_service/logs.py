"""Log lines: text for people, JSON for machines; each carries the id of the request it belongs to.

No line holds a credential: whatever put one into a message (a download path, a query, an exception's
text, a library's own log), it is replaced before the line is written.
"""

from __future__ import annotations

import json
import logging
import re
from contextvars import ContextVar
from datetime import UTC, datetime

from repo_service.domain.clients import KEY_PREFIX
from repo_service.settings import Settings

# Set per HTTP request (and per FTPS session) by the adapters; "-" outside of one.
REQUEST_ID: ContextVar[str] = ContextVar("request_id", default="-")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"

# What credentials look like in running text. A download token is grant.expiry.MAC in base 36 with a MAC of
# 20 URL-safe base64 characters (domain/tokens.py); the boundaries keep dotted names such as module paths out.
# An API key is KEY_PREFIX and 43 characters; its first four, which key listings show, are no secret.
# An ftp:// location carries its one-time password in the userinfo; a bearer header carries a key.
_CREDENTIALS = [
    (re.compile(r"(?<![\w.-])[0-9a-z]{1,14}\.[0-9a-z]{1,14}\.[A-Za-z0-9_-]{20}(?![\w-])"), "[token]"),
    (re.compile(re.escape(KEY_PREFIX) + r"[A-Za-z0-9_-]{16,}"), KEY_PREFIX + "[key]"),
    (re.compile(r"(?i)\b((?:ftps?|https?)://[^/\s:@]*:)[^/\s@]+@"), r"\1[password]@"),
    (re.compile(r"(?i)\b(bearer\s+)[^\s\"',]+"), r"\1[key]"),
]


def redact(text: str) -> str:
    """text with every download token, API key and password it holds replaced by a placeholder."""
    for pattern, placeholder in _CREDENTIALS:
        text = pattern.sub(placeholder, text)
    return text


class _Redacting(logging.Formatter):
    """The whole line as written (message, exception and stack), without credentials."""

    def __init__(self, formatter: logging.Formatter) -> None:
        super().__init__()
        self.formatter = formatter

    def format(self, record: logging.LogRecord) -> str:
        return redact(self.formatter.format(record))


class _RequestId(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):  # an FTPS session passes its own
            record.request_id = REQUEST_ID.get()
        return True


class JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "request_id": getattr(record, "request_id", "-"),
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(settings: Settings) -> None:
    handler = logging.StreamHandler()
    handler.addFilter(_RequestId())
    handler.setFormatter(_Redacting(JsonLines() if settings.log_format == "json" else logging.Formatter(TEXT_FORMAT)))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    # pika logs every step of each connection at INFO; its warnings (a lost broker) are what an operator needs.
    logging.getLogger("pika").setLevel(max(root.level, logging.WARNING))
