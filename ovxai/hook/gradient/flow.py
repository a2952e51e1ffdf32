"""What a backward rule may use: the vocabulary, the view, the forward values of the path it differentiates, and the
layout of the gradients.

A gradient has one more leading axis than its tensor: (K', R, ...) for a forward tensor of (R, ...) rows, one slice
per selected class, so that every forward value (R, ...) broadcasts against it unchanged. Rules that need plain
batches (convolutions, pools) fold the class axis into the rows, (K' * R, ...), and unfold their result.
"""

from __future__ import annotations

from typing import Generic, TypeVar

from ovxai.errors import OvxaiError
from ovxai.graph.ops import END, Ops
from ovxai.graph.view import Dim, GraphView, Node

T = TypeVar("T")


class Flow(Generic[T]):
    """The backward's view of one tail: ``value(name)`` is the forward tensor ``name`` of the path being
    differentiated (the original path's own tensors, or an Integrated Grad-CAM step's copies of them)."""

    def __init__(
        self, ops: Ops[T], graph: GraphView, active: frozenset[str], copies: dict[str, T] | None = None
    ) -> None:
        self.ops, self.graph, self.active, self.copies = ops, graph, active, copies

    def value(self, name: str) -> T:
        """The forward value of ``name``: the original path's tensor, or its copy where the path is a copy
        (Integrated Grad-CAM's steps). The export's builder hands the hook private copies of the original's
        activations (:mod:`ovxai.hook.private_reads`), recomputed back to the nearest weighted nodes, so that few
        reads make few copies: the rules read outputs of activations, inputs of products, and :mod:`.patterns`
        reads a written-out GELU as one op."""
        if self.copies is not None and name in self.copies:
            return self.copies[name]
        return self.ops.tensor(name)

    def swapped(self, name: str) -> T:
        """The forward value of ``name`` with its last two axes swapped: the source of a Transpose that swapped
        them, which an engine folds into the product reading it (ONNX Runtime's FusedMatMul), else transposed."""
        node = self.graph.producer.get(name)
        rank = self.rank(name)
        swap = [*range(rank - 2), rank - 1, rank - 2]
        if node is not None and node.op == "Transpose" and node.perm is not None and list(node.perm) == swap:
            return self.value(node.inputs[0])
        return self.ops.transpose(self.value(name), swap)

    def indices(self, node: Node) -> T:
        """A MaxPool's argmax positions on this path: the original pool's own, or a copy's."""
        if self.copies is None:
            return self.ops.indices(node)
        return self.ops.indices(node, self.value(node.inputs[0]))

    def needs(self, name: str) -> bool:
        """Whether ``name`` depends on the target through differentiable ops (its gradient is wanted)."""
        return name in self.active

    def shape(self, name: str) -> tuple[Dim, ...]:
        """The static shape of a tensor (its dimensions as the view knows them)."""
        shape = self.graph.tensor(name).shape
        if shape is None:
            raise OvxaiError(f"the rank of '{name}' is unknown", "give the input shape with --input-shape")
        return shape

    def rank(self, name: str) -> int:
        return len(self.shape(name))

    def scalar(self, value: float, like: str) -> T:
        """A scalar constant in the element type of the forward tensor ``like``."""
        dtype = self.ops.dtype(like)
        constant = self.ops.f32(value)
        return constant if dtype == "float32" else self.ops.cast(constant, dtype)

    def mask(self, condition: T, like: str) -> T:
        """A boolean condition as 0 / 1 in the element type of ``like``."""
        return self.ops.cast(condition, self.ops.dtype(like))

    # -- shapes ------------------------------------------------------------------------------------
    # A shape is read from the view where it is static, else from the gradient itself: reading the shape of a
    # forward tensor gives it one more reader, which stops an engine fusing the op that makes it with the next
    # (ONNX Runtime's Conv + Add + Relu) and moves the prediction by rounding.

    def trailing(self, name: str) -> T:
        """The dimensions of ``name`` after its first, 1-D int64: static where the view knows them."""
        dims = self.shape(name)[1:]
        if all(isinstance(d, int) for d in dims):
            return self.ops.i64([int(d) for d in dims])  # type: ignore[arg-type]
        return self.ops.slice(self.ops.shape(self.value(name)), 1, END)

    def classes(self, grad: T) -> T:
        """K' of a gradient, 1-D int64."""
        return self.ops.slice(self.ops.shape(grad), 0, 1)

    # -- the class axis ----------------------------------------------------------------------------

    def rows(self, grad: T) -> T:
        """(K', R, ...) -> (K' * R, ...): a gradient as one plain batch."""
        ops = self.ops
        return ops.reshape(grad, ops.concat([ops.i64([-1]), ops.slice(ops.shape(grad), 2, END)]))

    def unrows(self, rows: T, like: str, grad: T) -> T:
        """(K' * R, ...) -> (K', R, ...) where ``like`` is the forward tensor (R, ...) the result is the gradient of,
        and ``grad`` the gradient the rows came from (its K')."""
        return self.ops.reshape(rows, self.ops.concat([self.classes(grad), self.ops.i64([-1]), self.trailing(like)]))

    def like(self, grad: T, name: str) -> T:
        """A gradient laid out as the forward tensor ``name``, (K', *shape of name): undoes a reshape."""
        return self.ops.reshape(grad, self.ops.concat([self.classes(grad), self.ops.i64([-1]), self.trailing(name)]))

    def full(self, grad: T, name: str) -> T:
        """A gradient still broadcast over some axes (a global pool's: 1 x 1) expanded to the forward shape."""
        return self.ops.expand(grad, self.ops.concat([self.ops.i64([1]), self.trailing(name)]))

    def zeros(self, like_grad: T, name: str) -> T:
        """A zero gradient of the forward tensor ``name``, with the classes and rows of ``like_grad``."""
        ops = self.ops
        shape = ops.concat([ops.slice(ops.shape(like_grad), 0, 2), self.trailing(name)])
        return ops.expand(self.scalar(0.0, name), shape)

    def unbroadcast(self, grad: T, name: str, out: str, matrix: bool = False) -> T:
        """The gradient of an input ``name`` that the op broadcast to its output ``out``: summed over the axes the
        input lacks or has as 1 where the output does not (numpy broadcasting, read from the static shapes);
        ``matrix``: a product's operand, whose last two axes are its own (only the batch axes broadcast)."""
        ops = self.ops
        have, want = self.shape(name), self.shape(out)
        missing = len(want) - len(have)
        axes = [1 + k for k in range(missing)]
        batch = len(have) - 2 if matrix else len(have)
        axes += [1 + missing + k for k, d in enumerate(have[:batch]) if d == 1 and want[missing + k] != 1]
        if axes:
            grad = ops.reduce_axes("ReduceSum", grad, axes)
        return self.like(grad, name) if missing else grad
