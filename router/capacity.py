"""How many chat requests the server takes at once. Each one in flight (answering, or waiting for the engine
or the upstream) holds one of the server's threads; beyond `limit`, a request gets a prompt 503 with
Retry-After instead of a thread, so the threads left over keep answering pages, artifacts, /healthz and
/metrics at any load (router/__main__.py runs `limit` + SPARE_THREADS threads).
"""
from __future__ import annotations

import math
import threading
import time

from router import metrics
from router.errors import ApiError

SPARE_THREADS = 4  # threads never taken by chats


class ChatSlots:
    def __init__(self, limit: int):
        self.limit = limit
        self.in_flight = 0
        self.answer_s = 2.0  # a running average of how long a chat holds its slot: the Retry-After estimate
        self._lock = threading.Lock()

    def take(self) -> "Slot":
        with self._lock:
            if self.in_flight >= self.limit:
                wait = max(1, math.ceil(self.answer_s * self.in_flight / self.limit))
                raise ApiError(503, f"the server is answering {self.in_flight} chats, its limit; retry in about "
                               f"{wait} s", code="server_busy", headers={"Retry-After": str(wait)})
            self.in_flight += 1
            metrics.CHATS_IN_FLIGHT.set(self.in_flight)
        return Slot(self)

    def _release(self, held_s: float) -> None:
        with self._lock:
            self.in_flight -= 1
            metrics.CHATS_IN_FLIGHT.set(self.in_flight)
            self.answer_s = 0.8 * self.answer_s + 0.2 * held_s


class Slot:
    """One chat's place; `release()` is safe to call more than once (every way out of a request calls it)."""

    def __init__(self, slots: ChatSlots):
        self.slots, self.started, self._released = slots, time.monotonic(), False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self.slots._release(time.monotonic() - self.started)
