"""The hub: orders timeline events (``seq`` from 1), keeps the last ``capacity`` of them, and hands them to
every reader through a bounded queue of its own. Publishing never blocks and never waits for a reader: a
reader too slow for the stream loses events and is told how many (a ``dropped`` event) when it reads again."""
from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field

from boshlab.timeline import TimelineEvent, matches


@dataclass(frozen=True)
class Filters:
    deployment: str | None = None
    instance: str | None = None
    method: str | None = None
    kinds: tuple[str, ...] | None = None

    def accept(self, event: TimelineEvent) -> bool:
        return matches(event, self.deployment, self.instance, self.method, self.kinds)


@dataclass
class Counters:
    published: int = 0
    delivered: int = 0        # events put into a reader's queue
    dropped: int = 0          # events a reader's full queue could not take


@dataclass(eq=False)
class Subscription:
    """An async iterator of events: the backlog asked for, then new events as they are published."""
    hub: Hub
    filters: Filters
    maxsize: int
    backlog: deque[TimelineEvent] = field(default_factory=deque)
    queue: deque[TimelineEvent] = field(default_factory=deque)
    missed: int = 0           # events this reader lost, in all
    closed: bool = False
    _wakeup: asyncio.Event = field(default_factory=asyncio.Event)

    def offer(self, event: TimelineEvent) -> None:
        if len(self.queue) >= self.maxsize:
            # Lost, and said so in its place: one ``dropped`` event for each run of lost events.
            self.missed += 1
            self.hub.counters.dropped += 1
            last = self.queue[-1] if self.queue else None
            if last is not None and last.get("kind") == "dropped" and "seq" not in last:
                n = last.get("dropped", 0) + 1
                last["dropped"] = n
                last["text"] = f"{n} events dropped: this reader was too slow"
            else:
                self.queue.append({"kind": "dropped", "ts": time.time(), "src": "director", "dropped": 1,
                                   "text": "1 events dropped: this reader was too slow"})
        else:
            self.queue.append(event)
            self.hub.counters.delivered += 1
        self._wakeup.set()

    def pending(self) -> int:
        return len(self.backlog) + len(self.queue)

    def get_nowait(self) -> TimelineEvent | None:
        if self.backlog:
            return self.backlog.popleft()
        if self.queue:
            return self.queue.popleft()
        return None

    async def get(self, timeout: float | None = None) -> TimelineEvent | None:
        """The next event, or None after ``timeout`` seconds without one (or once closed)."""
        while not self.closed:
            event = self.get_nowait()
            if event is not None:
                return event
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), timeout)
            except TimeoutError:
                return None
        return None

    def close(self) -> None:
        self.closed = True
        self.hub.unsubscribe(self)
        self._wakeup.set()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> TimelineEvent:
        event = await self.get()
        if event is None:
            raise StopAsyncIteration
        return event


class Hub:
    def __init__(self, capacity: int = 10_000) -> None:
        self.capacity = capacity
        self._ring: deque[TimelineEvent] = deque(maxlen=capacity)
        self._seq = 0
        self._subscribers: set[Subscription] = set()
        self.counters = Counters()

    @property
    def last_seq(self) -> int:
        return self._seq

    def publish(self, event: TimelineEvent) -> TimelineEvent:
        """Give the event its ``seq`` (and ``ts`` if it has none), keep it, offer it to every reader."""
        self._seq += 1
        event["seq"] = self._seq
        if "ts" not in event:
            event["ts"] = time.time()
        self._ring.append(event)
        self.counters.published += 1
        for sub in tuple(self._subscribers):
            if sub.filters.accept(event):
                sub.offer(event)
        return event

    def history(self, since: int | None = None, last: int | None = None,
                filters: Filters | None = None) -> list[TimelineEvent]:
        """Buffered events after seq ``since`` (all buffered without it), of those the ``last`` N, filtered."""
        events: list[TimelineEvent] = list(self._ring)
        if since is not None and events:
            first = events[0].get("seq", 1)
            events = events[max(0, since - first + 1):]
        if filters is not None:
            events = [e for e in events if filters.accept(e)]
        if last is not None:
            events = events[-last:] if last > 0 else []
        return events

    def subscribe(self, filters: Filters | None = None, since: int | None = None, history: int | None = None,
                  maxsize: int = 1000) -> Subscription:
        """A reader: first the buffered events after ``since`` and/or the last ``history`` ones (filtered),
        then every new event that passes the filters. Close it (``close()``) when done."""
        f = filters or Filters()
        sub = Subscription(self, f, max(1, maxsize))
        if since is not None or history is not None:
            sub.backlog.extend(self.history(since, history, f))
        self._subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subscribers.discard(sub)

    def close_all(self) -> None:
        """End every reader (the director stops)."""
        for sub in tuple(self._subscribers):
            sub.close()

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)
