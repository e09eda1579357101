"""One ONNX graph or function body as the TensorRT preflight sees it: which names are build-time
constants (initializers, Constant nodes, also those of enclosing graphs for If/Loop/Scan bodies),
who produces and consumes each tensor, and which tensors are computed from shapes only."""

from __future__ import annotations

from glmix_deploy.tensorrt.onnx_ops import SHAPE_PASSTHROUGH_OPS, dtype_name


class GraphScope:
    """One graph or function body: its constants, producers and consumers."""

    def __init__(self, where: str, nodes, initializers, constant_outputs, inputs: set[str], outputs: set[str],
                 parent: GraphScope | None = None):
        self.where = where
        self.parent = parent  # the enclosing graph of an If/Loop/Scan body (outer-scope names)
        self.nodes = list(nodes)
        self.initializers = initializers  # name -> TensorProto
        self.constants = dict(constant_outputs)  # name -> TensorProto (Constant nodes' values, None if unknown)
        self.inputs = inputs
        self.outputs = outputs
        self.producer = {o: n for n in self.nodes for o in n.output if o}
        self.consumers: dict[str, list] = {}
        for n in self.nodes:
            for i in n.input:
                if i:
                    self.consumers.setdefault(i, []).append(n)
        self._shape_derived: dict[str, bool] = {}

    def _proto(self, name: str):
        scope = self
        while scope is not None:
            if name in scope.initializers:
                return scope.initializers[name]
            if name in scope.constants:
                return scope.constants[name]
            if name in scope.producer or name in scope.inputs:
                return None  # computed (or an input) in this scope
            scope = scope.parent
        return None

    def is_constant(self, name: str) -> bool:
        scope = self
        while scope is not None:
            if name in scope.initializers or name in scope.constants:
                return True
            if name in scope.producer or name in scope.inputs:
                return False
            scope = scope.parent
        return False

    def constant_value(self, name: str):
        import numpy as np
        from onnx import numpy_helper

        proto = self._proto(name)
        if proto is None:
            return None
        try:
            return np.asarray(numpy_helper.to_array(proto))
        except Exception:  # external data not loaded, exotic types
            return None

    def constant_dtype(self, name: str) -> str | None:
        proto = self._proto(name)
        return dtype_name(proto.data_type) if proto is not None else None

    def constant_dims(self, name: str) -> list[int] | None:
        proto = self._proto(name)
        return list(proto.dims) if proto is not None else None

    def shape_derived(self, name: str, _depth: int = 0) -> bool:
        """True if `name` is computed from constants and tensor shapes only (a shape tensor)."""
        if name in self._shape_derived:
            return self._shape_derived[name]
        if self.is_constant(name):
            return True
        node = self.producer.get(name)
        result = False
        if node is not None and _depth < 200:
            if node.op_type in ("Shape", "Size"):
                result = True
            elif node.op_type in SHAPE_PASSTHROUGH_OPS:
                result = all(self.shape_derived(i, _depth + 1) for i in node.input if i)
        self._shape_derived[name] = result
        return result


def node_attribute(node, name: str, default=None):
    """The value of a node's attribute, `default` when it is not set."""
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def attribute_text(value) -> str:
    """A string attribute as text (onnx hands them over as bytes)."""
    return value.decode() if isinstance(value, bytes) else str(value)
