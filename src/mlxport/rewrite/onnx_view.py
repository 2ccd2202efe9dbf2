"""One small view of ONNX nodes that both ONNX-level rewriters use.

``OnnxView`` indexes a list of nodes (the lowering's ``ConvertContext.nodes`` or a
loaded model's ``graph.node``): producers, consumers, use counts, rewiring,
replacing and dead-code removal. ``ModelView`` adds what a rewrite of a loaded
``ModelProto`` needs: initializers by name, fresh names, new constants and nodes.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Any, Iterable, MutableSequence

import numpy as np

if TYPE_CHECKING:
    import onnx


def attr(node: onnx.NodeProto, name: str, default: Any = None) -> Any:
    """The value of one attribute of ``node``, or ``default`` when it is not set."""
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def attrs(node: onnx.NodeProto) -> dict[str, Any]:
    """All attributes of ``node`` as a dict of Python values."""
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


class OnnxView:
    """Producers and consumers of a list of ONNX nodes.

    The index is a snapshot taken by ``reindex()``: passes that edit the list
    decide when to take a new one (several rely on the index from before their edits).

    Args:
        nodes: the node list, edited in place (a Python list or a protobuf repeated field).
        outputs: the graph's output names (a use that no node makes).
    """

    def __init__(self, nodes: MutableSequence[Any], outputs: Iterable[str] = ()) -> None:
        self.nodes = nodes
        self.outputs: set[str] = set(outputs)
        self.reindex()

    def reindex(self) -> None:
        """Rebuild ``producer`` (name -> node) and ``consumers`` (name -> nodes, once per use)."""
        self.producer: dict[str, Any] = {}
        self.consumers: dict[str, list[Any]] = defaultdict(list)
        for node in self.nodes:
            for out in node.output:
                if out:
                    self.producer[out] = node
            for inp in node.input:
                if inp:
                    self.consumers[inp].append(node)

    def uses(self, name: str) -> int:
        """How many node inputs read ``name``, plus one if it is a graph output."""
        return len(self.consumers.get(name, ())) + (name in self.outputs)

    def use_counts(self) -> dict[str, int]:
        """``uses`` of every name that has one, as a dict a pass may update as it folds."""
        counts = {name: len(users) for name, users in self.consumers.items()}
        for o in self.outputs:
            counts[o] = counts.get(o, 0) + 1
        return counts

    def rewire(self, old: str, new: str) -> None:
        """Make every node that reads ``old`` read ``new`` (the index is not updated)."""
        for n in self.nodes:
            for i, name in enumerate(n.input):
                if name == old:
                    n.input[i] = new

    def replace(self, replacements: dict[int, list[Any]], dead: set[int] = frozenset()) -> None:
        """Put ``replacements[id(node)]`` in each node's place, drop nodes in ``dead``, and reindex."""
        rebuilt: list[Any] = []
        for node in self.nodes:
            if id(node) in replacements:
                rebuilt.extend(replacements[id(node)])
            elif id(node) not in dead:
                rebuilt.append(node)
        self.set_nodes(rebuilt)

    def set_nodes(self, nodes: list[Any]) -> None:
        """Replace the node list's contents and reindex (a protobuf field copies the nodes it is given)."""
        del self.nodes[:]
        self.nodes.extend(nodes)
        self.reindex()

    def remove_dead(self) -> int:
        """Drop the nodes no graph output depends on (ONNX nodes have no side effects); returns how many.

        Walks from the outputs through the producers, so the node order does not matter.
        """
        producer = {o: n for n in self.nodes for o in n.output if o}
        live_nodes: set[int] = set()
        stack = [o for o in self.outputs]
        seen = set(stack)
        while stack:
            node = producer.get(stack.pop())
            if node is None or id(node) in live_nodes:
                continue
            live_nodes.add(id(node))
            for i in node.input:
                if i and i not in seen:
                    seen.add(i)
                    stack.append(i)
        dropped = len(self.nodes) - len(live_nodes)
        if dropped:
            self.set_nodes([n for n in self.nodes if id(n) in live_nodes])
        return dropped

    def topological_order(self, available: Iterable[str]) -> tuple[list[Any], list[Any]]:
        """(nodes in an order where each reads only what is available or made earlier, nodes that never can be)."""
        ready = set(available) | {""}
        pending = list(self.nodes)
        order: list[Any] = []
        while pending:
            rest = []
            for node in pending:
                if all(i in ready for i in node.input):
                    order.append(node)
                    ready.update(node.output)
                else:
                    rest.append(node)
            if len(rest) == len(pending):
                return order, rest
            pending = rest
        return order, []


class ModelView(OnnxView):
    """An ``OnnxView`` of a loaded model's main graph, with its initializers and builders for new nodes.

    Args:
        model: edited in place.
        prefix: the stem of every name this view makes (so a rewrite's names cannot clash with the export's).
    """

    def __init__(self, model: onnx.ModelProto, prefix: str) -> None:
        self.model = model
        self.graph = model.graph
        self.init = {t.name: t for t in self.graph.initializer}
        self.inputs = {i.name for i in self.graph.input}
        self._prefix = prefix
        self._count = 0
        super().__init__(self.graph.node, (o.name for o in self.graph.output))

    def name(self, stem: str) -> str:
        """A fresh value or node name."""
        self._count += 1
        return f"{self._prefix}/{stem}_{self._count}"

    def const(self, stem: str, value: np.ndarray) -> str:
        """Add an initializer holding ``value``; returns its name."""
        from onnx import numpy_helper

        name = self.name(stem)
        tensor = numpy_helper.from_array(np.asarray(value), name)
        self.graph.initializer.append(tensor)
        self.init[name] = tensor
        return name

    def node(self, op: str, inputs: list[str], outputs: int | list[str] = 1, *, domain: str = "",
             **attributes: Any) -> onnx.NodeProto:
        """A new node (not yet in the graph) with fresh output names unless ``outputs`` names them."""
        from onnx import helper

        names = [self.name(op.lower()) for _ in range(outputs)] if isinstance(outputs, int) else outputs
        return helper.make_node(op, inputs, names, name=self.name(op), domain=domain, **attributes)

    def array(self, name: str) -> np.ndarray | None:
        """The value of an initializer, or None when ``name`` is not one."""
        from onnx import numpy_helper

        return numpy_helper.to_array(self.init[name]) if name in self.init else None

    def drop_initializer(self, name: str) -> None:
        """Remove an initializer from the graph."""
        self.graph.initializer.remove(self.init.pop(name))

    def prune(self) -> None:
        """Drop the nodes no output depends on, then the initializers nothing reads."""
        self.remove_dead()
        self.reindex()
        used = {i for n in self.nodes for i in n.input}
        for t in list(self.graph.initializer):
            if t.name not in used and t.name not in self.outputs:
                self.graph.initializer.remove(t)
                self.init.pop(t.name, None)
