"""Real Ruby ERB, with the workshop's own redis templates."""
from pathlib import Path

import pytest

from boshlab.erb import JobTemplates, TemplateError, render
from boshlab.properties import merge_properties
from boshlab.release import JobSpec

JOB = Path(__file__).resolve().parents[2] / "workshop" / "release" / "jobs" / "redis"


def redis_job() -> tuple[JobSpec, JobTemplates]:
    spec = JobSpec.parse((JOB / "spec").read_text())
    templates = {src: (JOB / "templates" / src).read_text() for src in spec.templates}
    templates["monit"] = (JOB / "monit").read_text()
    return spec, JobTemplates("redis", templates)


def apply_spec(props):
    return {"deployment": "redis-solo", "job": {"name": "redis"}, "index": 0, "id": "abc",
            "networks": {"default": {"ip": "127.0.0.1"}}, "properties": props}


async def test_defaults_render_the_decks_values():
    spec, job = redis_job()
    out = await render([job], apply_spec(merge_properties(spec.properties, {"redis": {}})))
    conf = out["redis"]["config/redis.conf.erb"]
    assert "port 6379\n" in conf
    assert "requirepass r3d!s\n" in conf


async def test_overrides_render():
    spec, job = redis_job()
    out = await render([job], apply_spec(merge_properties(spec.properties, {"redis": {"port": 7000, "password": "supersecret"}})))
    conf = out["redis"]["config/redis.conf.erb"]
    assert "port 7000\n" in conf and "requirepass supersecret\n" in conf


async def test_missing_property_names_job_template_and_property():
    job = JobTemplates("redis", {"config/redis.conf.erb": "port <%= p('redis.port') %>\n"})
    with pytest.raises(TemplateError) as e:
        await render([job], apply_spec({"redis": {"port": None}}))
    assert e.value.property == "redis.port"
    assert "config/redis.conf.erb" in str(e.value) and "'redis'" in str(e.value) and "redis.port" in str(e.value)


async def test_helpers_if_p_default_and_spec():
    src = ("<%= p('a.missing', 'dflt') %>|<%= p(['x.none', 'a.b']) %>|"
           "<% if_p('a.b') do |b| %>has <%= b %><% end %>|"
           "<% if_p('a.none') do |v| %>no<% end.else do %>else<% end %>|<%= spec.networks.default.ip %>|<%= spec.index %>")
    out = await render([JobTemplates("j", {"t": src})], apply_spec({"a": {"b": 5}}))
    assert out["j"]["t"] == "dflt|5|has 5|else|127.0.0.1|0"


async def test_broken_template_is_a_clear_error():
    with pytest.raises(TemplateError, match="t.erb' for job 'j'.*NameError"):
        await render([JobTemplates("j", {"t.erb": "<%= no_such_thing %>"})], apply_spec({}))
