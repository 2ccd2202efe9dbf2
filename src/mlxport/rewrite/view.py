"""An index over the IR graph that the clean-up and fusion passes match patterns on."""

from __future__ import annotations

import numpy as np

from ..graph import Graph, Node


class GraphView:
    """Producers, consumers and graph outputs of an IR graph, indexed once.

    The index is a snapshot: a pass that edits ``graph.nodes`` builds a new view
    before it matches again.

    Args:
        graph: the graph to index.
    """

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.producer: dict[str, Node] = {o: n for n in graph.nodes for o in n.outputs}
        self.users: dict[str, list[Node]] = graph.consumers()
        self.outputs: set[str] = set(graph.output_sources.values())

    def node(self, name: str, primitive: str) -> Node | None:
        """The node computing ``name`` if it is a ``primitive``, else None."""
        n = self.producer.get(name)
        return n if n is not None and n.primitive == primitive else None

    def only_user(self, name: str) -> Node | None:
        """The single consumer of ``name``; None when it has several or is a graph output."""
        users = self.users.get(name, [])
        if len(users) != 1 or name in self.outputs:
            return None
        return users[0]

    def scalar(self, name: str) -> float | None:
        """The value of a one-element constant, else None."""
        value = self.graph.constants.get(name)
        if value is None or value.size != 1:
            return None
        return float(np.asarray(value, dtype=np.float32).reshape(-1)[0])

    def split_const(self, node: Node) -> tuple[str, float] | None:
        """(other input, scalar constant) of a binary node with one scalar-constant operand."""
        for i in (0, 1):
            c = self.scalar(node.inputs[i])
            if c is not None:
                return node.inputs[1 - i], c
        return None

    def const_operand(self, name: str, primitive: str) -> tuple[Node, str, float] | None:
        """(node, other input, scalar) when ``name`` is a binary ``primitive`` of something and a scalar constant."""
        node = self.node(name, primitive)
        split = self.split_const(node) if node is not None else None
        return None if split is None else (node, *split)


def replace_nodes(graph: Graph, replaced: dict[int, Node]) -> None:
    """Put ``replaced[id(node)]`` in each matched node's place, then drop what no output needs any more."""
    graph.nodes = [replaced.get(id(n), n) for n in graph.nodes]
    remove_dead_nodes(graph)


def remove_dead_nodes(graph: Graph) -> int:
    """Drop nodes none of whose outputs is used (MLX primitives have no side effects).

    Args:
        graph: edited in place.

    Returns:
        How many nodes were dropped.
    """
    live = set(graph.output_sources.values())
    keep: list[Node] = []
    for node in reversed(graph.nodes):
        if any(o in live for o in node.outputs):
            keep.append(node)
            live.update(node.inputs)
    dropped = len(graph.nodes) - len(keep)
    graph.nodes = keep[::-1]
    return dropped
