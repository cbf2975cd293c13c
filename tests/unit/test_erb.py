"""Real Ruby ERB, with the workshop's own redis templates."""
import asyncio
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from boshlab.erb import JobTemplates, RenderTimeout, TemplateError, render
from boshlab.properties import merge_properties
from boshlab.release import JobSpec

JOB = Path(__file__).resolve().parents[2] / "workshop" / "release" / "jobs" / "redis"


def redis_job() -> tuple[JobSpec, JobTemplates]:
    spec = JobSpec.parse((JOB / "spec").read_text())
    templates = {src: (JOB / "templates" / src).read_text() for src in spec.templates}
    templates["monit"] = (JOB / "monit").read_text()
    return spec, JobTemplates("redis", templates)


def apply_spec(props: dict[str, Any]) -> dict[str, Any]:
    return {"deployment": "redis-solo", "job": {"name": "redis"}, "index": 0, "id": "abc",
            "networks": {"default": {"ip": "127.0.0.1"}}, "properties": props}


async def test_defaults_render_the_decks_values() -> None:
    spec, job = redis_job()
    out = await render([job], apply_spec(merge_properties(spec.properties, {"redis": {}})))
    conf = out["redis"]["config/redis.conf.erb"]
    assert "port 6379\n" in conf
    assert "requirepass r3d!s\n" in conf


async def test_overrides_render() -> None:
    spec, job = redis_job()
    out = await render([job], apply_spec(merge_properties(spec.properties, {"redis": {"port": 7000, "password": "supersecret"}})))
    conf = out["redis"]["config/redis.conf.erb"]
    assert "port 7000\n" in conf and "requirepass supersecret\n" in conf


async def test_missing_property_names_job_template_and_property() -> None:
    job = JobTemplates("redis", {"config/redis.conf.erb": "port <%= p('redis.port') %>\n"})
    with pytest.raises(TemplateError) as e:
        await render([job], apply_spec({"redis": {"port": None}}))
    assert e.value.property == "redis.port"
    assert "config/redis.conf.erb" in str(e.value) and "'redis'" in str(e.value) and "redis.port" in str(e.value)


async def test_helpers_if_p_default_and_spec() -> None:
    src = ("<%= p('a.missing', 'dflt') %>|<%= p(['x.none', 'a.b']) %>|"
           "<% if_p('a.b') do |b| %>has <%= b %><% end %>|"
           "<% if_p('a.none') do |v| %>no<% end.else do %>else<% end %>|<%= spec.networks.default.ip %>|<%= spec.index %>")
    out = await render([JobTemplates("j", {"t": src})], apply_spec({"a": {"b": 5}}))
    assert out["j"]["t"] == "dflt|5|has 5|else|127.0.0.1|0"


async def test_broken_template_is_a_clear_error() -> None:
    with pytest.raises(TemplateError, match="t.erb' for job 'j'.*NameError"):
        await render([JobTemplates("j", {"t.erb": "<%= no_such_thing %>"})], apply_spec({}))


# --- deadline, cancel, templates that write to stdout ----------------------------------------------

def alive(pid: int) -> bool:
    """The process exists and is not a zombie (a killed orphan may wait for a reaper that never comes)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.fixture
def ruby_pids(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """The pids of the processes render() starts; any left alive at the end are killed (and fail the test
    that left them)."""
    pids: list[int] = []
    real = asyncio.create_subprocess_exec

    async def spy(*args: Any, **kw: Any) -> asyncio.subprocess.Process:
        proc = await real(*args, **kw)
        pids.append(proc.pid)
        return proc
    monkeypatch.setattr(asyncio, "create_subprocess_exec", spy)
    yield pids
    for pid in pids:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


async def test_endless_template_times_out_and_ruby_and_its_children_are_killed(ruby_pids: list[int],
                                                                                  tmp_path: Path) -> None:
    child = tmp_path / "child.pid"
    src = f"<% File.write({str(child)!r}, spawn('sleep', '60').to_s) %><% loop {{}} %>"
    start = time.monotonic()
    with pytest.raises(RenderTimeout) as e:
        await asyncio.wait_for(render([JobTemplates("j", {"ok": "fine", "t.erb": src})], apply_spec({}),
                                      timeout=1), 15)
    assert time.monotonic() - start < 5
    assert isinstance(e.value, TemplateError)
    assert "rendering timed out after 1 s" in str(e.value)
    assert (e.value.job, e.value.template) == ("j", "t.erb")   # the one that was running
    assert len(ruby_pids) == 1 and not alive(ruby_pids[0])
    assert not alive(int(child.read_text()))                   # what the template started dies too


async def test_cancel_of_render_kills_ruby(ruby_pids: list[int]) -> None:
    task = asyncio.create_task(render([JobTemplates("j", {"t.erb": "<% loop {} %>"})], apply_spec({})))
    for _ in range(100):
        if ruby_pids:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)
    assert len(ruby_pids) == 1 and alive(ruby_pids[0])
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(40):   # (render() waits for ruby before it lets the CancelledError through)
        if not alive(ruby_pids[0]):
            break
        await asyncio.sleep(0.05)
    assert not alive(ruby_pids[0])


async def test_templates_writing_to_stdout_do_not_spoil_the_result() -> None:
    src = ("<% puts 'x' %>a<% $stdout.write('{\"rendered\": 1}') %>b<% STDOUT.print('y') %>"
           "<% $stdout.flush %><% system('echo sub') %>c<%= p('v') %>")
    out = await render([JobTemplates("j", {"t": src, "u": "<% print 'z' %>u"})], apply_spec({"v": 1}))
    assert out == {"j": {"t": "abc1", "u": "u"}}
