"""Whether a response's last byte left for the client, as far as the server can know.

A write returns once the bytes are in the connection's buffer, not once the client has them: a charger
whose link dropped after 6.7 of 16.8 MB still had the whole image "sent" to it, because writes into the
closed connection went on. A download counts as complete only when, after its last write, the buffer
was drained into the network while the connection was still open (seen right after the write, while
waiting, or when the client closed it cleanly: curl closes as soon as it has read the last byte).
"""

from __future__ import annotations

import asyncio
from typing import Any

# Long enough for a slow charger to take what the buffer still holds (64 KiB at a few KB/s),
# short enough that a response does not hang around for a client that went away.
CONFIRM_SECONDS = 30.0
POLL_SECONDS = 0.05
EXTENSION = "fwrepo.delivery"


class DeliveryProbe:
    """Set on each request's scope by the server's protocol; read by the download's body."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        # Whether the buffer was drained when the connection ended (None: it has not ended).
        self.delivered_at_end: bool | None = None

    @property
    def gone(self) -> bool:
        """The client has closed or lost the connection: what is written now reaches no one."""
        return self.delivered_at_end is not None or self.transport.is_closing()

    def ended(self, error: Exception | None) -> None:
        """Called by the server's protocol when the client closes or the connection is lost: a reset or a
        broken pipe means the client did not take everything; a clean close with nothing left to write, that it did."""
        if self.delivered_at_end is None:
            self.delivered_at_end = error is None and self.transport.get_write_buffer_size() == 0

    async def confirmed(self, seconds: float = CONFIRM_SECONDS) -> bool:
        """Wait until everything written so far has left the buffer with the connection open (True), or it ends."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while not self.gone:
            if self.transport.get_write_buffer_size() == 0:
                return True
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(POLL_SECONDS)
        return bool(self.delivered_at_end)


def probe_of(scope: dict[str, Any]) -> DeliveryProbe | None:
    return scope.get("extensions", {}).get(EXTENSION)
