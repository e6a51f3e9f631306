"""How many chat requests the server takes at once. Each one in flight (answering, or waiting for the engine
or the upstream) holds one of the server's threads; beyond `limit`, a request gets a prompt 503 with
Retry-After instead of a thread, so the threads left over keep answering pages, artifacts, /healthz and
/metrics at any load (router/__main__.py runs `limit` + SPARE_THREADS threads).

One client address may hold only `per_client` of them, and only `client_s_per_min` seconds of chats in
flight over the last minute (a prompt 429 with Retry-After beyond either): chats that leave, or streams
no one reads, from one address cannot take every slot and keep everyone else waiting.
"""
from __future__ import annotations

import math
import threading
import time
from collections import deque

from router import metrics
from router.errors import ApiError

SPARE_THREADS = 4  # threads never taken by chats
WINDOW_S = 60.0    # the window a client's seconds of chats are counted over


class ChatSlots:
    def __init__(self, limit: int, per_client: int = 0, client_s_per_min: float = 0.0):
        self.limit, self.per_client, self.client_s_per_min = limit, per_client, client_s_per_min
        self.in_flight = 0
        self.answer_s = 2.0  # a running average of how long a chat holds its slot: the Retry-After estimate
        self._by_client: dict[str, int] = {}  # chats in flight per client; a client with none has no entry
        # Per client, (ended at, seconds held) of its chats that ended in the last WINDOW_S; the clients in the
        # order of their latest chat's end, so those not seen for a window are forgotten from the front.
        self._used: dict[str, deque] = {}
        self._lock = threading.Lock()

    def take(self, client: str = "") -> "Slot":
        with self._lock:
            if self.in_flight >= self.limit:
                wait = max(1, math.ceil(self.answer_s * self.in_flight / self.limit))
                raise ApiError(503, f"the server is answering {self.in_flight} chats, its limit; retry in about "
                               f"{wait} s", code="server_busy", headers={"Retry-After": str(wait)})
            self._check_client(client, time.monotonic())
            self.in_flight += 1
            self._by_client[client] = self._by_client.get(client, 0) + 1
            metrics.CHATS_IN_FLIGHT.set(self.in_flight)
        return Slot(self, client)

    def _check_client(self, client: str, now: float) -> None:
        in_flight = self._by_client.get(client, 0)
        if self.per_client and in_flight >= self.per_client:
            wait = max(1, math.ceil(self.answer_s))
            raise ApiError(429, f"this client has {in_flight} chats in flight, its limit "
                           f"(SEAM_MAX_CHATS_PER_CLIENT); retry in about {wait} s when one has ended",
                           code="too_many_chats", headers={"Retry-After": str(wait)})
        if not self.client_s_per_min:
            return
        self._forget_before(now - WINDOW_S)
        ended = self._used.get(client, ())
        while ended and ended[0][0] < now - WINDOW_S:
            ended.popleft()
        used = sum(held for _, held in ended)
        if used >= self.client_s_per_min:
            wait = max(1, math.ceil(ended[0][0] + WINDOW_S - now))
            raise ApiError(429, f"this client's chats took {used:.0f} s of the last minute, its limit "
                           f"(SEAM_CLIENT_CHAT_S_PER_MIN); retry in about {wait} s", code="too_many_chats",
                           headers={"Retry-After": str(wait)})

    def _forget_before(self, cutoff: float) -> None:
        """Clients whose latest chat ended before `cutoff`: nothing of theirs counts any more."""
        while self._used:
            client, ended = next(iter(self._used.items()))
            if ended[-1][0] >= cutoff:
                return
            del self._used[client]

    def _release(self, client: str, held_s: float) -> None:
        with self._lock:
            self.in_flight -= 1
            self._by_client[client] -= 1
            if not self._by_client[client]:
                del self._by_client[client]
            if self.client_s_per_min:
                ended = self._used.pop(client, deque())  # re-inserted: the most recent client goes last
                ended.append((time.monotonic(), held_s))
                self._used[client] = ended
            metrics.CHATS_IN_FLIGHT.set(self.in_flight)
            self.answer_s = 0.8 * self.answer_s + 0.2 * held_s


class Slot:
    """One chat's place; `release()` is safe to call more than once (every way out of a request calls it)."""

    def __init__(self, slots: ChatSlots, client: str):
        self.slots, self.client, self.started, self._released = slots, client, time.monotonic(), False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self.slots._release(self.client, time.monotonic() - self.started)
