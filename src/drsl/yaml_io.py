"""YAML read safely: plain data only (``yaml.SafeLoader``), with aliases bounded.

An alias (``*name``) repeats a node; nested aliases multiply, so a few hundred bytes can stand for
billions of values (an "alias bomb") whose printing or merging exhausts memory, and an alias
inside its own anchor makes a structure that contains itself. :func:`load_yaml` refuses both,
and text nested too deeply for the parser, with a :class:`YAMLLimitError` (a ``yaml.YAMLError``,
so callers that report invalid YAML report these too).
"""

from __future__ import annotations

from typing import Any

import yaml

#: Most nodes that aliases may add to a document when expanded (real files use a handful).
MAX_ALIAS_EXPANSION = 10_000


class YAMLLimitError(yaml.YAMLError):
    """YAML text whose structure exceeds a safety limit (aliases, self-reference, nesting)."""


def _expanded_extra_nodes(root: yaml.Node) -> int:
    """How many nodes aliases add when ``root``'s graph is expanded into a tree; a
    YAMLLimitError for a node that contains itself or an expansion past the limit."""
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        children = _children(node)
        if children_done:
            on_path.discard(key)
            sizes[key] = 1 + sum(sizes[id(child)] for child in children)
            continue
        if key in sizes:
            continue
        if key in on_path:
            raise YAMLLimitError("an alias refers to a node that contains it (a structure inside itself)")
        on_path.add(key)
        stack.append((node, True))
        for child in children:
            if id(child) in on_path:
                raise YAMLLimitError("an alias refers to a node that contains it (a structure inside itself)")
            if id(child) not in sizes:
                stack.append((child, False))
    distinct = len(sizes)
    extra = sizes[id(root)] - distinct
    if extra > MAX_ALIAS_EXPANSION:
        raise YAMLLimitError(
            f"aliases expand to {sizes[id(root)]} values from {distinct} written ones "
            f"(at most {MAX_ALIAS_EXPANSION} more are allowed)"
        )
    return extra


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def load_yaml(text: str) -> Any:
    """The plain data of one YAML document (``yaml.safe_load``), with aliases bounded (see the
    module); invalid or over-limit text is a ``yaml.YAMLError``."""
    loader = yaml.SafeLoader(text)
    try:
        try:
            node = loader.get_single_node()
        except RecursionError:
            raise YAMLLimitError("the text is nested too deeply") from None
        if node is None:
            return None
        _expanded_extra_nodes(node)
        try:
            return loader.construct_document(node)
        except RecursionError:
            raise YAMLLimitError("the text is nested too deeply") from None
    finally:
        loader.dispose()
