"""Webhook events fwrepo pushes to a CSMS: the one place their payload models are registered.

Each entry is an event name and the model of the JSON body delivered for it;
repo_service.http.openapi describes every entry in the document's ``webhooks``
section. Empty until the webhooks capability (issue 14, point 4) lands.
"""

from __future__ import annotations

from repo_service.contract.base import Reply

WEBHOOK_EVENTS: dict[str, type[Reply]] = {}
