"""Admission control: bounded concurrent requests and bytes in flight, so a
burst of large requests is refused (RESOURCE_EXHAUSTED, naming the limit)
rather than growing the server's memory without bound."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from ctsynth.errors import ResourceExhausted
from ctsynth.observability.prometheus import SAMPLING_ACTIVE, SAMPLING_BYTES


class Limiter:
    """Slots for requests and a byte budget they reserve on admission."""

    def __init__(self, max_concurrent: int, max_bytes: int):
        self.max_concurrent = max_concurrent
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self.active = 0
        self.bytes = 0

    @contextmanager
    def admit(self, reserve_bytes: int) -> Iterator[None]:
        """Hold a slot and `reserve_bytes` for the block; refuse at once when either is exhausted."""
        with self._lock:
            if reserve_bytes > self.max_bytes:
                raise ResourceExhausted(f"this request needs {reserve_bytes} bytes in flight, above the limit of "
                                        f"{self.max_bytes} (CTSYNTH_SAMPLING_MAX_BYTES); ask for a smaller "
                                        "batch_size")
            if self.active >= self.max_concurrent:
                raise ResourceExhausted(f"{self.active} sampling requests are in progress, the limit is "
                                        f"{self.max_concurrent} (CTSYNTH_SAMPLING_MAX_CONCURRENT); retry later")
            if self.bytes + reserve_bytes > self.max_bytes:
                raise ResourceExhausted(f"{self.bytes} bytes are in flight and this request needs {reserve_bytes} "
                                        f"more, above the limit of {self.max_bytes} (CTSYNTH_SAMPLING_MAX_BYTES); "
                                        "retry later")
            self.active += 1
            self.bytes += reserve_bytes
        SAMPLING_ACTIVE.inc()
        SAMPLING_BYTES.inc(reserve_bytes)
        try:
            yield
        finally:
            with self._lock:
                self.active -= 1
                self.bytes -= reserve_bytes
            SAMPLING_ACTIVE.dec()
            SAMPLING_BYTES.dec(reserve_bytes)
