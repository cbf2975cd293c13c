"""Job properties as the director binds them: job.MF defaults under the manifest's values."""
from __future__ import annotations

import copy
from typing import Any

_MISSING = object()


def lookup(props: dict[str, Any], dotted: str) -> Any:
    """The value at ``a.b.c`` in nested ``props``, or ``_MISSING``."""
    node: Any = props
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            return _MISSING
        node = node[key]
    return node


def get(props: dict[str, Any], dotted: str, default: Any = None) -> Any:
    v = lookup(props, dotted)
    return default if v is _MISSING else v


def set_path(props: dict[str, Any], dotted: str, value: Any) -> None:
    node = props
    keys = dotted.split(".")
    for key in keys[:-1]:
        nxt = node.get(key)
        if not isinstance(nxt, dict):
            nxt = node[key] = {}
        node = nxt
    node[keys[-1]] = value


def merge_properties(declared: dict[str, dict[str, Any]] | None, manifest: dict[str, Any] | None) -> dict[str, Any]:
    """Bind a job's properties.

    For each property the job spec (``job.MF`` ``properties:``) declares, the manifest's value is used if it is
    set (not null), else the spec's ``default``, else null (and ``p()`` then raises for it). Undeclared manifest
    properties are not passed. A job that declares no properties gets all manifest properties, as in 2013.
    """
    manifest = manifest or {}
    if not declared:
        return copy.deepcopy(manifest)
    out: dict[str, Any] = {}
    for name in sorted(declared):
        definition = declared[name] or {}
        value = lookup(manifest, name)
        if value is _MISSING or value is None:
            value = copy.deepcopy(definition.get("default")) if isinstance(definition, dict) else None
        else:
            value = copy.deepcopy(value)
        set_path(out, name, value)
    return out


def missing_required(declared: dict[str, dict[str, Any]] | None, merged: dict[str, Any]) -> list[str]:
    """Declared properties that ended up null: no manifest value and no default."""
    return [name for name in sorted(declared or {}) if get(merged, name) is None]
