"""boshlab/timeline.py: the filters and the one-line form that `watch`, its replay and the page share."""
from __future__ import annotations

from boshlab.timeline import TimelineEvent, matches, render_line, unanswered

PING: TimelineEvent = {"seq": 1, "ts": 0.0, "kind": "request", "instance": "redis/0", "deployment": "d",
                       "method": "ping", "call": "c1", "arguments": []}
REPLY: TimelineEvent = {"seq": 2, "ts": 0.1, "kind": "reply", "instance": "redis/0", "deployment": "d",
                        "method": "ping", "call": "c1", "state": "done", "value": "pong", "latency_ms": 3.0}
BEATS: TimelineEvent = {"seq": 3, "ts": 1.0, "kind": "heartbeats",
                        "heartbeats": {"count": 2, "window_s": 10, "instances": {"redis/0": "running"}}}
FAULT: TimelineEvent = {"seq": 4, "ts": 2.0, "kind": "fault", "text": "kill-agent on redis/0 (d)"}


def test_instance_filter_takes_name_group_and_ids_and_keeps_summaries_and_faults_naming_it() -> None:
    with_ids: TimelineEvent = {**REPLY, "instance_id": "uuid-1", "agent_id": "agent-1"}
    for want in ("redis/0", "redis", "uuid-1", "agent-1"):
        assert matches(with_ids, instance=want)
    assert not matches(REPLY, instance="redis/1") and not matches(REPLY, instance="web")
    assert matches(BEATS, instance="redis/0") and matches(FAULT, instance="redis/0")
    assert not matches(BEATS, instance="web/0") and not matches(FAULT, instance="web/0")


def test_a_method_filter_keeps_only_that_methods_calls_even_with_an_instance_filter() -> None:
    assert matches(PING, method="ping", instance="redis/0") and matches(REPLY, method="ping")
    assert not matches(BEATS, method="ping", instance="redis/0")
    assert not matches(FAULT, method="ping", instance="redis/0")
    assert not matches(REPLY, method="apply")


def test_a_deployment_filter_drops_calls_of_unknown_deployment_but_keeps_global_events() -> None:
    assert matches(REPLY, deployment="d") and not matches(REPLY, deployment="other")
    assert not matches({**REPLY, "deployment": None}, deployment="d")
    assert matches(BEATS, deployment="d") and matches(FAULT, deployment="d")
    director_put: TimelineEvent = {"seq": 5, "ts": 3.0, "kind": "blob", "src": "director", "dst": "blobstore",
                                   "deployment": None, "blob": {"method": "PUT", "id": "b", "status": 201}}
    assert matches(director_put) and not matches(director_put, deployment="d")


def test_requests_fold_into_their_replies_and_unanswered_ones_say_so() -> None:
    assert render_line(PING) is None
    line = render_line(REPLY)
    assert line is not None and 'ping [] → "pong"' in line and "3 ms" in line
    assert unanswered([PING, REPLY]) == set()
    assert unanswered([PING]) == {1}
    pending = render_line(PING, pending=True)
    assert pending is not None and "ping [] … no reply yet" in pending


def test_long_running_reply_reads_as_one_action_with_its_polls() -> None:
    apply: TimelineEvent = {"seq": 9, "ts": 5.0, "kind": "reply", "instance": "redis/0", "method": "apply",
                            "call": "c9", "state": "done", "agent_task_id": "t1", "latency_ms": 1204.0,
                            "polls": 5, "value": "applied", "arguments": [{}]}
    line = render_line(apply)
    assert line is not None and "apply [{}] … applied in 1.2 s, 5 get_task polls" in line
