"""The watch hub (director/watch/hub.py): order, buffer, fan-out without ever blocking the publisher."""
from __future__ import annotations

import asyncio

from boshlab.timeline import TimelineEvent
from director.watch.hub import Filters, Hub


def ev(kind: str = "note", **fields: object) -> TimelineEvent:
    e: TimelineEvent = {"kind": kind}  # type: ignore[typeddict-item]
    e.update(fields)  # type: ignore[typeddict-item]
    return e


def test_publish_numbers_events_from_one_and_stamps_a_time_when_missing() -> None:
    hub = Hub()
    a = hub.publish(ev(text="a"))
    b = hub.publish(ev(text="b", ts=12.5))
    assert (a["seq"], b["seq"]) == (1, 2) and hub.last_seq == 2
    assert a["ts"] > 1e9 and b["ts"] == 12.5
    assert hub.counters.published == 2


def test_history_since_and_last_over_a_ring_of_the_capacity() -> None:
    hub = Hub(capacity=5)
    for i in range(8):
        hub.publish(ev(text=str(i)))
    assert [e["seq"] for e in hub.history()] == [4, 5, 6, 7, 8]
    assert [e["seq"] for e in hub.history(since=6)] == [7, 8]
    assert [e["seq"] for e in hub.history(since=1)] == [4, 5, 6, 7, 8]      # older than the ring: what is left
    assert [e["seq"] for e in hub.history(since=8)] == []
    assert [e["seq"] for e in hub.history(last=2)] == [7, 8]
    assert [e["seq"] for e in hub.history(since=4, last=10)] == [5, 6, 7, 8]
    assert hub.history(last=0) == []


def test_filters_apply_to_history_and_to_subscribers() -> None:
    hub = Hub()
    hub.publish(ev("reply", method="apply", deployment="d1", instance="redis/0"))
    hub.publish(ev("reply", method="ping", deployment="d2", instance="web/1"))
    hub.publish(ev("blob", deployment=None, instance=None))
    # the director's own blob request belongs to no deployment: a deployment filter leaves it out
    assert [e["seq"] for e in hub.history(filters=Filters(deployment="d1"))] == [1]
    assert [e["seq"] for e in hub.history(filters=Filters(instance="web"))] == [2]
    assert [e["seq"] for e in hub.history(filters=Filters(method="apply"))] == [1]
    assert [e["seq"] for e in hub.history(filters=Filters(kinds=("blob",)))] == [3]
    sub = hub.subscribe(Filters(method="ping"))
    hub.publish(ev("reply", method="apply"))
    hub.publish(ev("reply", method="ping"))
    got = sub.get_nowait()
    assert got is not None and got["seq"] == 5 and sub.get_nowait() is None
    sub.close()
    assert hub.subscribers == 0


async def test_a_subscriber_gets_its_backlog_then_live_events_in_order() -> None:
    hub = Hub()
    for i in range(3):
        hub.publish(ev(text=str(i)))
    sub = hub.subscribe(since=1)
    seen: list[int] = []

    async def read() -> None:
        async for e in sub:
            seen.append(e["seq"])
            if e["seq"] == 5:
                return
    reader = asyncio.create_task(read())
    await asyncio.sleep(0.01)
    hub.publish(ev(text="3"))
    hub.publish(ev(text="4"))
    await asyncio.wait_for(reader, 2)
    assert seen == [2, 3, 4, 5]
    history_sub = hub.subscribe(history=2)
    assert [history_sub.get_nowait()["seq"], history_sub.get_nowait()["seq"]] == [4, 5]  # type: ignore[index]
    assert await history_sub.get(0.05) is None           # nothing new: None after the timeout
    history_sub.close()
    assert await history_sub.get(1) is None
    sub.close()


async def test_a_slow_subscriber_loses_events_and_is_told_how_many_while_the_publisher_never_waits() -> None:
    hub = Hub()
    slow = hub.subscribe(maxsize=10)
    fast = hub.subscribe(maxsize=10_000)
    for i in range(1000):
        hub.publish(ev(text=str(i)))        # synchronous: nothing here can wait for a reader
    got = [slow.get_nowait() for _ in range(11)]
    assert [e["seq"] for e in got[:10] if e] == list(range(1, 11))
    dropped = got[10]
    assert dropped is not None and dropped["kind"] == "dropped" and dropped["dropped"] == 990 and "seq" not in dropped
    assert slow.get_nowait() is None and slow.missed == 990
    hub.publish(ev(text="after"))
    after = slow.get_nowait()
    assert after is not None and after["seq"] == 1001
    for _ in range(12):                      # full again, a second run lost: a second dropped event, in order
        hub.publish(ev(text="more"))
    seqs = [slow.get_nowait() for _ in range(11)]
    assert [e.get("seq") for e in seqs if e] == [*range(1002, 1012), None]
    assert seqs[-1] is not None and seqs[-1]["dropped"] == 2
    assert fast.pending() == 1013
    assert hub.counters.published == 1013 and hub.counters.dropped == 992
    assert hub.counters.delivered == 10 + 1 + 10 + 1013
    slow.close()
    fast.close()


async def test_close_all_ends_every_reader() -> None:
    hub = Hub()
    sub = hub.subscribe()
    reader = asyncio.create_task(sub.get())
    await asyncio.sleep(0.01)
    hub.close_all()
    assert await asyncio.wait_for(reader, 1) is None and hub.subscribers == 0
