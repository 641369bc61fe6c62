"""A few seconds of memory for what was read from the database, bounded so that it cannot grow without end."""

from __future__ import annotations

import threading
import time
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class Recent(Generic[K, V]):
    """Values trusted for `seconds` after they were put, then read again."""

    def __init__(self, seconds: float, limit: int = 100_000) -> None:
        self.seconds = seconds
        self.limit = limit
        self._items: dict[K, tuple[float, V]] = {}
        # Downloads on the event loop and FTPS sessions in their threads share one cache.
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        item = self._items.get(key)
        if item is None or time.monotonic() - item[0] >= self.seconds:
            return None
        return item[1]

    def put(self, key: K, value: V) -> None:
        now = time.monotonic()
        with self._lock:
            # Kept in the order they were put: what expired is at the front and leaves at once,
            # so the cache holds a few seconds of lookups, not everything up to the limit.
            self._items.pop(key, None)
            self._items[key] = (now, value)
            while self._items:
                oldest = next(iter(self._items))
                if now - self._items[oldest][0] < self.seconds and len(self._items) <= self.limit:
                    break
                del self._items[oldest]

    def forget(self, key: K) -> None:
        with self._lock:
            self._items.pop(key, None)
