"""YAML from people and pipelines, loaded without letting it explode: a document of a few hundred bytes can
use aliases to stand for gigabytes once expanded ("billion laughs"). PyYAML shares aliased nodes, so the
blow-up happens later, in whoever walks or copies the result (property merging, JSON encoding). So the
document's node graph is composed first and its expanded size counted (each alias counts as a full copy of
what it names); only a document under the limits is constructed."""
from __future__ import annotations

from typing import Any

import yaml

MAX_BYTES = 4 << 20          # a manifest or release.MF larger than 4 MiB is not a lab's
MAX_NODES = 1_000_000        # nodes after expanding aliases
MAX_DEPTH = 200              # nesting


class YamlError(ValueError):
    """Not YAML, or YAML over a limit; the text says which."""


def _expanded(node: yaml.Node, memo: dict[int, int], depth: int, max_nodes: int, max_depth: int) -> int:
    if depth > max_depth:
        raise YamlError(f"nested deeper than {max_depth} levels")
    key = id(node)
    if key in memo:
        return memo[key]
    memo[key] = 1   # a node reached again while being counted (a recursive alias): count it once
    total = 1
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            total += _expanded(k, memo, depth + 1, max_nodes, max_depth)
            total += _expanded(v, memo, depth + 1, max_nodes, max_depth)
            if total > max_nodes:
                break
    elif isinstance(node, yaml.SequenceNode):
        for v in node.value:
            total += _expanded(v, memo, depth + 1, max_nodes, max_depth)
            if total > max_nodes:
                break
    if total > max_nodes:
        raise YamlError(f"expands to more than {max_nodes} nodes (YAML aliases that multiply?)")
    memo[key] = total
    return total


def load(text: str, *, what: str = "document", max_bytes: int = MAX_BYTES, max_nodes: int = MAX_NODES,
         max_depth: int = MAX_DEPTH) -> Any:
    """``yaml.safe_load`` with limits. Raises YamlError naming ``what`` and the limit or the syntax error."""
    if len(text) > max_bytes:
        raise YamlError(f"{what} is {len(text)} bytes, more than the limit of {max_bytes}")
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        raise YamlError(f"{what} is not valid YAML: {e}") from None
    except RecursionError:
        raise YamlError(f"{what} is nested too deeply") from None
    if node is None:
        return None
    try:
        _expanded(node, {}, 0, max_nodes, max_depth)
    except YamlError as e:
        raise YamlError(f"{what} {e}") from None
    except RecursionError:
        raise YamlError(f"{what} is nested too deeply") from None
    try:
        return yaml.SafeLoader(text).get_single_data()
    except yaml.YAMLError as e:
        raise YamlError(f"{what} is not valid YAML: {e}") from None
    except RecursionError:
        raise YamlError(f"{what} is nested too deeply") from None
    except Exception as e:  # noqa: BLE001 - PyYAML's constructors raise anything on bad input
        # ('!!int' with no value, '!!bool x', 'a: 2001-02-30', a 5000-digit number, odd tags...)
        raise YamlError(f"{what} has a value YAML cannot construct: {type(e).__name__}: {e}") from None
