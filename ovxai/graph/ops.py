"""The tensor operations the hook is written against, once for every graph format."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol, TypeVar

import numpy as np

from ovxai.graph.view import Dim, Node

T = TypeVar("T")
END = 2**62  # "to the end" for slices


class Ops(Protocol[T]):
    """Tensor operations a format adapter provides; ``T`` is its tensor handle.

    Semantics follow ONNX (numpy broadcasting for ``binary``, ``where``); shapes are 1-D int64 tensors.
    """

    def tensor(self, name: str) -> T:
        """The handle of an existing tensor of the original graph."""
        ...

    def dtype(self, name: str) -> str:
        """The numpy name of an original tensor's element type ('float32', 'float16', ...)."""
        ...

    def i64(self, values: Sequence[int] | np.ndarray) -> T:
        """An int64 constant; ``[]`` gives the empty shape (a scalar reshape target)."""
        ...

    def f32(self, value: float | np.ndarray) -> T:
        """A float32 constant: a scalar, or an array of any shape."""
        ...

    def shape(self, x: T) -> T:
        """The runtime shape of ``x``, 1-D int64."""
        ...

    def slice(self, x: T, start: int, end: int) -> T:
        """``x[start:end]`` along axis 0 (used on shapes)."""
        ...

    def concat(self, xs: Sequence[T], axis: int = 0) -> T:
        """Concatenation along ``axis`` (0: building shapes)."""
        ...

    def binary(self, op: Literal["Add", "Sub", "Mul", "Div", "Greater", "Equal"], a: T, b: T) -> T:
        """Element-wise with broadcasting; Greater and Equal give booleans."""
        ...

    def unary(self, op: Literal["Abs", "Floor", "Relu", "Sigmoid", "Round"], x: T) -> T:
        """Element-wise; Round rounds half to even."""
        ...

    def cast(self, x: T, dtype: str) -> T:
        """``x`` converted to the numpy-named element type."""
        ...

    def arange(self, n: T) -> T:
        """0, 1, ..., n-1 as int64, from a one-element ``n``."""
        ...

    def reshape(self, x: T, shape: T) -> T:
        """Reshape where -1 is inferred and 0 means a zero-sized dimension (no copy-from-input)."""
        ...

    def unsqueeze(self, x: T, axis: int) -> T:
        """A new axis of size 1 at ``axis``."""
        ...

    def transpose(self, x: T, perm: Sequence[int]) -> T: ...

    def matmul(self, a: T, b: T) -> T:
        """numpy ``matmul``: batched over leading axes."""
        ...

    def expand(self, x: T, shape: T) -> T:
        """Broadcast ``x`` bidirectionally against ``shape`` (ONNX Expand)."""
        ...

    def where(self, cond: T, a: T, b: T) -> T: ...

    def softmax(self, x: T, axis: int) -> T: ...

    def reduce(self, op: Literal["ReduceMin", "ReduceMax", "ReduceSum"], x: T, axis: int) -> T:
        """Reduction over one axis, keeping it (size 1)."""
        ...

    def topk(self, x: T, k: int) -> T:
        """int64 indices of the ``k`` largest values along the last axis, largest first."""
        ...

    def gather(self, x: T, indices: T, axis: int) -> T:
        """numpy ``take``: the entries of ``x`` at ``indices`` along ``axis`` (ONNX Gather)."""
        ...

    def gather_elements(self, x: T, indices: T, axis: int) -> T:
        """numpy ``take_along_axis`` (ONNX GatherElements); ``indices`` has ``x``'s rank."""
        ...

    def relaid(self, name: str, shape: Sequence[int], perm: Sequence[int]) -> T:
        """The constant ``name`` reshaped to ``shape`` (-1 inferred) and transposed by ``perm``, stored re-laid
        (where it is computed from constants, e.g. dequantised, the re-layout is emitted for the engine to fold)."""
        ...

    def replace(self, name: str, x: T) -> None:
        """``x`` takes the place of the original tensor ``name`` for all its readers (an output keeps its name);
        the node that produced it, and whatever only that node read (a weight), leave the model."""
        ...

    def copy_node(self, node: Node, inputs: Sequence[T | None], unpadded: bool = False) -> list[T]:
        """A copy of an original node reading ``inputs`` (None: an omitted optional input); its outputs.
        ``unpadded``: a convolution's copy pads nothing (its input already holds the border it reads)."""
        ...

    def output(self, x: T, name: str, shape: Sequence[Dim]) -> None:
        """Expose ``x`` as a model output named ``name``; ``shape`` is what the hook knows of it."""
        ...
