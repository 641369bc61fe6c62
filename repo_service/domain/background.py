"""Work a serving process repeats in a thread of its own (writing download records, campaign deadlines)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)


@contextmanager
def repeating(name: str, seconds: float, work: Callable[[], object],
              wake: threading.Event | None = None) -> Iterator[None]:
    """While the block runs, work() every `seconds`, and at once whenever `wake` is set; a failure is logged
    and the next round tries again."""
    stopped = threading.Event()
    wake = wake or threading.Event()

    def repeat_until_stopped() -> None:
        while True:
            wake.wait(seconds)
            wake.clear()
            if stopped.is_set():
                return
            try:
                work()
            except Exception:  # a database hiccup must not end the loop; the next round retries
                log.exception("%s failed; will retry", name)

    thread = threading.Thread(target=repeat_until_stopped, name=name, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stopped.set()
        wake.set()
        thread.join()
