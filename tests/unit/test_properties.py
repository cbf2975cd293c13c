from typing import Any

from boshlab.properties import merge_properties, missing_required

DECLARED: dict[str, dict[str, Any]] = {"redis.port": {"default": 6379}, "redis.password": {"default": "r3d!s"}, "redis.maxmemory": {}}


def test_all_defaults() -> None:  # slide 37, left: properties: {redis: {}}
    merged = merge_properties(DECLARED, {"redis": {}})
    assert merged == {"redis": {"port": 6379, "password": "r3d!s", "maxmemory": None}}
    assert missing_required(DECLARED, merged) == ["redis.maxmemory"]


def test_all_overrides() -> None:  # slide 37, right
    merged = merge_properties(DECLARED, {"redis": {"port": 7000, "password": "supersecret", "maxmemory": "1mb"}})
    assert merged == {"redis": {"port": 7000, "password": "supersecret", "maxmemory": "1mb"}}
    assert missing_required(DECLARED, merged) == []


def test_undeclared_properties_are_not_passed_and_null_falls_back_to_default() -> None:
    merged = merge_properties(DECLARED, {"redis": {"port": None, "other": 1}, "unrelated": True})
    assert merged["redis"]["port"] == 6379
    assert "other" not in merged["redis"] and "unrelated" not in merged


def test_no_declared_properties_pass_everything_through() -> None:
    props = {"a": {"b": 1}}
    merged = merge_properties({}, props)
    assert merged == props and merged is not props
