"""The blobstore's JSON access log -> ``blob`` events (director/watch/blob_log.py): the parse, the tail
(rotation, truncation, over-long lines), and nginx's own ``watch`` format from blobstore/nginx.conf."""
from __future__ import annotations

import asyncio
import json
import os
import re
from pathlib import Path

from boshlab.timeline import TimelineEvent, render_line
from director.watch.blob_log import MAX_LINE, Tailer, follow, parse_line
from director.watch.correlator import Name

ROOT = Path(__file__).resolve().parents[3]
VM_AGENT = "a1c3e5f7-0000-4000-8000-000000000001"


def line(**over: object) -> bytes:
    entry = {"remote_addr": "172.18.0.7", "remote_user": "agent", "request_method": "GET",
             "uri": "/3f/8c1e-blob-id", "status": 200, "body_bytes_sent": 2048, "request_length": 210,
             "content_length": "", "request_time": 0.012, "msec": 1764547200.123}
    entry.update(over)
    return json.dumps(entry).encode()


def by_ip(ip: str) -> str | None:
    return VM_AGENT if ip == "172.18.0.7" else None


def names(agent_id: str) -> Name | None:
    return ("redis-solo", "redis/0", "inst-0") if agent_id == VM_AGENT else None


def test_a_vm_get_is_named_by_its_instance() -> None:
    ev = parse_line(line(), by_ip, names)
    assert ev is not None and ev["kind"] == "blob" and ev["src"] == "redis/0" and ev["dst"] == "blobstore"
    assert ev["instance"] == "redis/0" and ev["deployment"] == "redis-solo" and ev["agent_id"] == VM_AGENT
    assert ev["ts"] == 1764547200.123
    assert ev["blob"] == {"method": "GET", "id": "8c1e-blob-id", "path": "/3f/8c1e-blob-id", "status": 200,
                          "bytes": 2048, "duration_ms": 12.0, "user": "agent"}
    text = render_line(ev)
    assert text is not None and "redis/0" in text and "GET 8c1e-blob-id 2.0 KiB 200" in text


def test_the_director_is_named_by_its_dav_user_and_a_put_counts_the_body_it_sent() -> None:
    ev = parse_line(line(remote_addr="172.18.0.7", remote_user="director", request_method="PUT", status=201,
                         body_bytes_sent=0, content_length="4096", request_length=4400), by_ip, names)
    assert ev is not None and ev["src"] == "director" and ev["instance"] is None
    assert ev["blob"]["bytes"] == 4096 and ev["blob"]["status"] == 201
    no_length = parse_line(line(remote_user="director", remote_addr="1.2.3.4", request_method="PUT", content_length=""))
    assert no_length is not None and no_length["blob"]["bytes"] == 210


def test_an_anonymous_stranger_is_named_by_address() -> None:
    ev = parse_line(line(remote_addr="10.9.8.7", remote_user="", status=401), by_ip, names)
    assert ev is not None and ev["src"] == "10.9.8.7" and "user" not in ev["blob"]


def test_lines_that_are_not_ours_are_none() -> None:
    for bad in (b"", b"garbage", b"[1,2]", b'{"uri": "/x"}', b"{" * 10, b'"x"', b"\xff\xfe",
                b'{"request_method": "GET", "uri": 5}', b"[" * 100_000, b"x" * (MAX_LINE + 1)):
        assert parse_line(bad) is None
    odd = parse_line(line(status="x", body_bytes_sent=None, request_time="-", msec="?"))
    assert odd is not None and odd["blob"]["status"] == 0 and "ts" not in odd and "duration_ms" not in odd


def test_the_tailer_starts_at_the_end_follows_appends_rotation_and_truncation(tmp_path: Path) -> None:
    log = tmp_path / "watch.log"
    log.write_bytes(b"old 1\nold 2\n")
    t = Tailer(str(log))
    assert t.poll() == []                                   # only what is written from now on
    with open(log, "ab") as f:
        f.write(b"one\ntw")
    assert t.poll() == [b"one"]                             # a half-written line waits
    with open(log, "ab") as f:
        f.write(b"o\n")
    assert t.poll() == [b"two"]
    log.rename(tmp_path / "watch.log.1")                    # rotated: a new file, read from its start
    log.write_bytes(b"three\n")
    assert t.poll() == [b"three"]
    with open(log, "ab") as f:
        f.write(b"four\nfive\n")
    assert t.poll() == [b"four", b"five"]
    with open(log, "r+b") as f:                             # truncated in place (blobstore/entrypoint.sh)
        f.truncate(0)
    with open(log, "ab") as f:
        f.write(b"six\n")
    assert t.poll() == [b"six"]
    with open(log, "ab") as f:                              # an over-long line is skipped, whole
        f.write(b"x" * (MAX_LINE + 10) + b"\nseven\n")
    got: list[bytes] = []
    for _ in range(5):
        got += t.poll()
    assert got == [b"seven"] and t.skipped == 1
    t.close()


def test_a_missing_file_is_waited_for(tmp_path: Path) -> None:
    log = tmp_path / "later.log"
    t = Tailer(str(log))
    assert t.poll() == []
    log.write_bytes(b"first\n")          # appeared after we started: read from its start
    assert t.poll() == [b"first"]
    t.close()


async def test_follow_publishes_blob_events_from_a_growing_file(tmp_path: Path) -> None:
    log = tmp_path / "watch.log"
    log.write_bytes(line(uri="/aa/before") + b"\n")
    got: list[TimelineEvent] = []
    task = asyncio.create_task(follow(str(log), got.append, by_ip, names, interval=0.02))
    try:
        await asyncio.sleep(0.1)
        with open(log, "ab") as f:
            f.write(line(uri="/aa/after") + b"\nnot json\n")
        for _ in range(100):
            if got:
                break
            await asyncio.sleep(0.02)
        assert [e["blob"]["id"] for e in got] == ["after"]
        os.truncate(log, 0)
        with open(log, "ab") as f:
            f.write(line(uri="/bb/rotated") + b"\n")
        for _ in range(100):
            if len(got) == 2:
                break
            await asyncio.sleep(0.02)
        assert [e["blob"]["id"] for e in got] == ["after", "rotated"]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def test_nginx_conf_writes_the_fields_the_parser_reads() -> None:
    conf = (ROOT / "blobstore" / "nginx.conf").read_text()
    m = re.search(r"log_format watch escape=json\s+((?:'[^']*'\s*)+);", conf)
    assert m, "blobstore/nginx.conf has no `log_format watch escape=json`"
    template = "".join(re.findall(r"'([^']*)'", m.group(1)))
    values = {"remote_addr": "172.18.0.7", "remote_user": "agent", "request_method": "GET", "uri": "/3f/id",
              "status": "200", "body_bytes_sent": "5", "request_length": "100", "content_length": "",
              "request_time": "0.001", "msec": "1764547200.123"}
    rendered = re.sub(r"\$(\w+)", lambda v: values[v.group(1)], template)
    ev = parse_line(rendered, by_ip, names)
    assert ev is not None and ev["src"] == "redis/0" and ev["blob"]["bytes"] == 5 and ev["ts"] == 1764547200.123
    assert "access_log /var/log/blobstore/watch.log watch" in conf
