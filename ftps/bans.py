"""Temporary bans for addresses that keep failing to log in."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

FAILURES = 5
WINDOW_SECONDS = 600.0
BAN_SECONDS = 900.0


class Bans:
    """FAILURES failed logins from one address within WINDOW_SECONDS ban it for BAN_SECONDS.

    Login names are 62-bit random and passwords 143-bit, so guessing is
    hopeless anyway; the ban keeps a scanner from costing a database lookup
    per guess and makes it visible in the log.
    """

    def __init__(self, failures: int = FAILURES, window: float = WINDOW_SECONDS, duration: float = BAN_SECONDS,
                 clock: Callable[[], float] = time.monotonic,
                 failed_elsewhere: Callable[[str, float], int] | None = None) -> None:
        self.failures, self.window, self.duration, self.clock = failures, window, duration, clock
        # Wrong logins every node has recorded from an address in the last N seconds: a scanner
        # moving from node to node behind a load balancer is banned on all of them.
        self.failed_elsewhere = failed_elsewhere
        self._failed: dict[str, deque[float]] = {}
        self._banned_until: dict[str, float] = {}
        self._lock = threading.Lock()

    def banned(self, address: str) -> bool:
        with self._lock:
            until = self._banned_until.get(address)
            if until is not None and self.clock() < until:
                return True
            if until is not None:
                del self._banned_until[address]
        if self.failed_elsewhere is not None and self.failed_elsewhere(address, self.window) >= self.failures:
            with self._lock:
                self._banned_until[address] = self.clock() + self.duration
            return True
        return False

    def failed(self, address: str) -> bool:
        """Count a failed login; True when it bans the address."""
        now = self.clock()
        with self._lock:
            if len(self._failed) > 100_000:  # bounded: forget addresses whose failures have aged out
                self._failed = {key: times for key, times in self._failed.items() if now - times[-1] <= self.window}
            recent = self._failed.setdefault(address, deque())
            recent.append(now)
            while recent and now - recent[0] > self.window:
                recent.popleft()
            if len(recent) < self.failures:
                return False
            del self._failed[address]
            self._banned_until[address] = now + self.duration
            if len(self._banned_until) > 100_000:  # bounded: forget the bans that have run out
                self._banned_until = {key: until for key, until in self._banned_until.items() if until > now}
            return True

    def succeeded(self, address: str) -> None:
        with self._lock:
            self._failed.pop(address, None)
