"""User data -> registry -> settings, with basic auth from the endpoint URL, retries, and the cache."""
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web

from agent.paths import Paths
from agent.settings import (
    Settings,
    SettingsError,
    SettingsService,
    heartbeat_interval,
    infrastructure_summary,
    parse_user_data,
    split_endpoint,
)
from tests.unit.conftest import Handler

from .conftest import make_settings

Registry = tuple[str, dict[str, Any], Settings]   # the registry's URL, its request log and failures, its settings


def test_split_endpoint_moves_credentials_to_a_header() -> None:
    url, auth = split_endpoint("http://admin:p%40ss@director:25889/")
    assert url == "http://director:25889"
    assert auth == {"Authorization": "Basic YWRtaW46cEBzcw=="}  # admin:p@ss
    assert split_endpoint("http://director:25889") == ("http://director:25889", {})
    with pytest.raises(SettingsError):
        split_endpoint("ftp://x")


def test_user_data_must_name_registry_and_instance() -> None:
    with pytest.raises(SettingsError, match="registry.endpoint"):
        parse_user_data('{"instance_id": "i"}')
    with pytest.raises(SettingsError, match="instance_id"):
        parse_user_data('{"registry": {"endpoint": "http://x"}}')
    with pytest.raises(SettingsError, match="not JSON"):
        parse_user_data("{")


def test_infrastructure_line_is_the_decks_form() -> None:
    s = make_settings("http://blobstore:25250")
    line = infrastructure_summary(s)
    assert line.startswith('{"networks"=>{"default"=>{"type"=>"dynamic", ')
    assert '"disks"=>{"system"=>"/dev/sda", "ephemeral"=>nil, "persistent"=>{}}' in line
    # the deck's line, with the passwords masked: each VM's NATS credentials stay out of logs
    assert line.endswith('"blobstore"=>{"provider"=>"dav", "options"=>{"endpoint"=>"http://blobstore:25250", '
                         '"user"=>"agent", "password"=>"***"}}, "mbus"=>"nats://nats:***@127.0.0.1:4222"}')


def test_heartbeat_interval_knob() -> None:
    assert heartbeat_interval(make_settings(heartbeat_interval=2)) == 2.0
    s = make_settings()
    s["env"] = {}
    assert heartbeat_interval(s) == 30.0
    s["env"] = {"bosh": {"heartbeat_interval": "x"}}
    assert heartbeat_interval(s) == 30.0


@pytest.fixture
async def registry(http_server: Callable[[Handler], Awaitable[str]]) -> Registry:
    state: dict[str, Any] = {"fail": 2, "requests": []}
    settings = make_settings()

    async def handler(request: web.Request) -> web.Response:
        state["requests"].append((request.path, request.headers.get("Authorization")))
        if request.headers.get("Authorization") != "Basic cmVnOnMzY3JldA==":  # reg:s3cret
            return web.Response(status=401)
        if state["fail"] > 0:
            state["fail"] -= 1
            return web.Response(status=404, text="no such instance yet")
        return web.json_response({"settings": json.dumps(settings)})
    url = await http_server(handler)
    return url, state, settings


def write_user_data(vcap: Paths, url: str) -> str:
    host = url.removeprefix("http://")
    raw = json.dumps({"registry": {"endpoint": f"http://reg:s3cret@{host}"}, "instance_id": "vm-cid-1",
                      "server": {"name": "vm-1"}})
    vcap.user_data.write_text(raw)
    return raw


async def test_registry_fetch_retries_then_caches(vcap: Paths, registry: Registry, agent_log: list[str]) -> None:
    url, state, settings = registry
    raw = write_user_data(vcap, url)
    svc = SettingsService(vcap, retry_delay=0.01)
    got = await svc.load()
    assert got == settings
    assert state["requests"][-1] == ("/instances/vm-cid-1/settings", "Basic cmVnOnMzY3JldA==")
    assert len(state["requests"]) == 3
    failures = [m for m in agent_log if m.startswith("WARN: Fetching settings from the registry failed")]
    assert len(failures) == 2 and "registry answered 404" in failures[0]
    assert agent_log[0] == 'INFO: Docker user data: "' + raw.replace('"', '\\"') + '"'
    assert [m for m in agent_log if m.startswith("INFO: loaded new")] == [
        "INFO: loaded new infrastructure settings: " + infrastructure_summary(settings)]
    assert json.loads(vcap.settings.read_text()) == settings
    assert vcap.settings.stat().st_mode & 0o777 == 0o600


async def test_gives_up_after_bounded_attempts_without_cache(vcap: Paths, registry: Registry) -> None:
    url, state, _ = registry
    state["fail"] = 100
    write_user_data(vcap, url)
    svc = SettingsService(vcap, attempts=3, retry_delay=0.01)
    with pytest.raises(SettingsError, match="after 3 attempts: registry answered 404"):
        await svc.load()


async def test_connection_refused_falls_back_to_the_cache(vcap: Paths) -> None:
    vcap.user_data.write_text(json.dumps({"registry": {"endpoint": "http://u:p@127.0.0.1:9"}, "instance_id": "i"}))
    cached = make_settings()
    vcap.settings.write_text(json.dumps(cached))
    svc = SettingsService(vcap, attempts=2, retry_delay=0.01)
    assert await svc.load() == cached


async def test_missing_user_data_is_retried_then_fails(vcap: Paths) -> None:
    svc = SettingsService(vcap, attempts=2, retry_delay=0.01)
    with pytest.raises(SettingsError, match="cannot read user data"):
        await svc.load()


async def test_prepare_network_change_rereads(vcap: Paths, registry: Registry) -> None:
    url, state, settings = registry
    state["fail"] = 0
    write_user_data(vcap, url)
    svc = SettingsService(vcap, retry_delay=0.01)
    await svc.load()
    settings["networks"]["default"]["ip"] = "172.18.0.99"
    vcap.settings.unlink()
    await svc.refresh()
    assert svc.settings["networks"]["default"]["ip"] == "172.18.0.99"
    assert json.loads(vcap.settings.read_text())["networks"]["default"]["ip"] == "172.18.0.99"
    state["fail"] = 100
    with pytest.raises(SettingsError):
        await svc.refresh(attempts=1)
    assert svc.settings["networks"]["default"]["ip"] == "172.18.0.99"  # kept what it had
    assert vcap.settings.exists()
