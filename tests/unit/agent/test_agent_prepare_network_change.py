"""prepare_network_change: really reads the registry again (cache dropped and rewritten), answers "ok",
and the agent keeps answering; a registry failure keeps the old settings."""
import json
from typing import Any

from .conftest import FakeRegistry, call


async def test_reads_the_registry_again(services: Any, registry: FakeRegistry) -> None:
    registry.settings["networks"]["default"]["ip"] = "172.18.0.99"
    fetches = registry.fetches
    assert await call(services, "prepare_network_change") == {"value": "ok"}
    assert registry.fetches == fetches + 1
    assert services.settings.settings["networks"]["default"]["ip"] == "172.18.0.99"
    assert json.loads(services.paths.settings.read_text())["networks"]["default"]["ip"] == "172.18.0.99"
    assert await call(services, "ping") == {"value": "pong"}


async def test_registry_failure_keeps_the_settings(services: Any, registry: FakeRegistry) -> None:
    registry.error = "registry answered 503"
    reply = await call(services, "prepare_network_change")
    assert "registry answered 503" in reply["exception"]["message"]
    assert services.settings.settings["networks"]["default"]["ip"] == "172.18.0.5"
    assert json.loads(services.paths.settings.read_text())["agent_id"] == "agent-1"
    assert await call(services, "ping") == {"value": "pong"}
