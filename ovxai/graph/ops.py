"""The tensor operations the hook is written against, once for every graph format.

Each format adapter provides one primitive, a :class:`Builder`: make a node from an ONNX operator name and
its attributes, make a constant, and the few things that touch the original model (read a tensor, copy a
node, replace a tensor, add an output). :class:`Ops`, the vocabulary the hook speaks, is written once on top
of it, so a new operation is one method here and one entry in each adapter's table (onnx-graphsurgeon's
layering: one node factory per backend, the op helpers above it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Generic, Literal, Protocol, TypeVar

import numpy as np

from ovxai.graph.view import Dim, Node, Sliding

T = TypeVar("T")
END = 2**62  # "to the end" for slices


class Builder(Protocol[T]):
    """A format's node factory; ``T`` is its tensor handle.

    ``node`` takes the ONNX operator name and ONNX semantics (opset 18 and later). Attributes that older
    ONNX opsets or other formats take as inputs are given as attributes here (``axes``, ``starts``/``ends``,
    ``k``): each builder places them as its format wants. ``to`` (Cast) is a numpy type name.
    """

    def node(self, op: str, inputs: Sequence[T], outputs: int = 1, **attrs: Any) -> list[T]:
        """One new node reading ``inputs``; its first ``outputs`` outputs."""
        ...

    def constant(self, value: np.ndarray) -> T:
        """A new constant holding ``value`` (its dtype kept)."""
        ...

    def tensor(self, name: str) -> T:
        """The handle of an existing tensor of the original graph."""
        ...

    def dtype(self, name: str) -> str:
        """The numpy name of an original tensor's element type ('float32', 'float16', ...)."""
        ...

    def stored(self, name: str) -> tuple[np.ndarray, str | None] | None:
        """The data an original constant is stored as, and the type it is converted to when read (FP16 weights
        decompressed to FP32), or None when the tensor is computed (a dequantised weight)."""
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

    def indices(self, node: Node, x: T | None = None) -> T:
        """An original MaxPool's argmax, as ONNX's ``Indices`` output: int64 positions in its input flattened
        whole (batch and channels included), the first maximum of each window where several are equal. ``x``:
        the argmax of the same pool applied to ``x`` (a copy's input) instead of the original's own."""
        ...

    def finish(self) -> Any:
        """The model with the new nodes and outputs (the format's own model object)."""
        ...


class Ops(Generic[T]):
    """The hook's vocabulary over one format's :class:`Builder`.

    Semantics follow ONNX (numpy broadcasting for ``binary``, ``where``); shapes are 1-D int64 tensors.
    """

    def __init__(self, builder: Builder[T]) -> None:
        self.builder = builder

    def _one(self, op: str, *inputs: T, **attrs: Any) -> T:
        return self.builder.node(op, inputs, **attrs)[0]

    # -- the original graph ------------------------------------------------------------------------

    def tensor(self, name: str) -> T:
        """The handle of an existing tensor of the original graph."""
        return self.builder.tensor(name)

    def dtype(self, name: str) -> str:
        """The numpy name of an original tensor's element type ('float32', 'float16', ...)."""
        return self.builder.dtype(name)

    def replace(self, name: str, x: T) -> None:
        """``x`` takes the place of the original tensor ``name`` (see :meth:`Builder.replace`)."""
        self.builder.replace(name, x)

    def copy_node(self, node: Node, inputs: Sequence[T | None], unpadded: bool = False) -> list[T]:
        """A copy of an original node reading ``inputs`` (see :meth:`Builder.copy_node`)."""
        return self.builder.copy_node(node, inputs, unpadded)

    def output(self, x: T, name: str, shape: Sequence[Dim]) -> None:
        """Expose ``x`` as a model output named ``name``; ``shape`` is what the hook knows of it."""
        self.builder.output(x, name, shape)

    def relaid(self, name: str, shape: Sequence[int], perm: Sequence[int]) -> T:
        """The constant ``name`` reshaped to ``shape`` (-1 inferred) and transposed by ``perm``, stored re-laid
        (FP16 data stays FP16 and is decompressed as before); a weight computed from constants (dequantised) is
        re-laid by nodes, which the engines fold at load."""
        stored = self.builder.stored(name)
        if stored is None:
            return self.transpose(self.reshape(self.tensor(name), self.i64(shape)), perm)
        data, decompressed = stored
        relaid = self.builder.constant(np.ascontiguousarray(data.reshape(shape).transpose(perm)))
        return relaid if decompressed is None else self.cast(relaid, decompressed)

    # -- constants and shapes ----------------------------------------------------------------------

    def i64(self, values: Sequence[int] | np.ndarray) -> T:
        """An int64 constant; ``[]`` gives the empty shape (a scalar reshape target)."""
        return self.builder.constant(np.array(values, dtype=np.int64))

    def f32(self, value: float | np.ndarray) -> T:
        """A float32 constant: a scalar, or an array of any shape."""
        return self.builder.constant(np.array(value, dtype=np.float32))

    def shape(self, x: T) -> T:
        """The runtime shape of ``x``, 1-D int64."""
        return self._one("Shape", x)

    def slice(self, x: T, start: int, end: int) -> T:
        """``x[start:end]`` along axis 0 (used on shapes)."""
        return self._one("Slice", x, starts=[start], ends=[end])

    def concat(self, xs: Sequence[T], axis: int = 0) -> T:
        """Concatenation along ``axis`` (0: building shapes)."""
        return self._one("Concat", *xs, axis=axis)

    def arange(self, n: T) -> T:
        """0, 1, ..., n-1 as int64, from a one-element ``n``."""
        zero, one = (self.builder.constant(np.array(v, dtype=np.int64)) for v in (0, 1))
        return self._one("Range", zero, self.reshape(n, self.i64([])), one)

    # -- element-wise ------------------------------------------------------------------------------

    def binary(self, op: Literal["Add", "Sub", "Mul", "Div", "Pow", "Greater", "Equal"], a: T, b: T) -> T:
        """Element-wise with broadcasting; Greater and Equal give booleans."""
        return self._one(op, a, b)

    def unary(
        self, op: Literal["Abs", "Floor", "Relu", "Sigmoid", "Round", "Exp", "Erf", "Tanh", "Sqrt", "Neg"], x: T
    ) -> T:
        """Element-wise; Round rounds half to even."""
        return self._one(op, x)

    def cast(self, x: T, dtype: str) -> T:
        """``x`` converted to the numpy-named element type."""
        return self._one("Cast", x, to=dtype)

    def where(self, cond: T, a: T, b: T) -> T:
        return self._one("Where", cond, a, b)

    # -- layout ------------------------------------------------------------------------------------

    def reshape(self, x: T, shape: T) -> T:
        """Reshape where -1 is inferred; the hook never writes a 0 (whose meaning differs between formats)."""
        return self._one("Reshape", x, shape)

    def unsqueeze(self, x: T, axis: int) -> T:
        """A new axis of size 1 at ``axis``."""
        return self._one("Unsqueeze", x, axes=[axis])

    def transpose(self, x: T, perm: Sequence[int]) -> T:
        return self._one("Transpose", x, perm=list(perm))

    def expand(self, x: T, shape: T) -> T:
        """Broadcast ``x`` bidirectionally against ``shape`` (ONNX Expand)."""
        return self._one("Expand", x, shape)

    def gather(self, x: T, indices: T, axis: int) -> T:
        """numpy ``take``: the entries of ``x`` at ``indices`` along ``axis`` (ONNX Gather)."""
        return self._one("Gather", x, indices, axis=axis)

    def gather_elements(self, x: T, indices: T, axis: int) -> T:
        """numpy ``take_along_axis`` (ONNX GatherElements); ``indices`` has ``x``'s rank."""
        return self._one("GatherElements", x, indices, axis=axis)

    def crop(self, x: T, starts: T, ends: T, axes: Sequence[int]) -> T:
        """``x[starts:ends]`` along ``axes``, bounds given as 1-D int64 tensors (known only at run time)."""
        return self._one("Slice", x, starts, ends, axes=list(axes))

    def pad(self, x: T, begins: Sequence[int], ends: Sequence[int]) -> T:
        """``x`` with zeros added before and after each axis (one count per axis of ``x``)."""
        return self._one("Pad", x, pads=[*begins, *ends])

    def split(self, x: T, sizes: T, axis: int, count: int) -> list[T]:
        """``x`` cut along ``axis`` into ``count`` parts of ``sizes`` (1-D int64, known only at run time)."""
        return self.builder.node("Split", [x, sizes], outputs=count, axis=axis)

    def scatter_add(self, data: T, indices: T, updates: T, axis: int) -> T:
        """``data`` with each of ``updates`` added at its index along ``axis`` (ONNX ScatterElements, reduction
        add: an index given twice gets both)."""
        return self._one("ScatterElements", data, indices, updates, axis=axis, reduction="add")

    def indices(self, node: Node, x: T | None = None) -> T:
        """An original MaxPool's argmax positions, or those of the same pool on ``x`` (see :meth:`Builder.indices`)."""
        return self.builder.indices(node, x)

    # -- products and reductions -------------------------------------------------------------------

    def matmul(self, a: T, b: T) -> T:
        """numpy ``matmul``: batched over leading axes."""
        return self._one("MatMul", a, b)

    def softmax(self, x: T, axis: int) -> T:
        return self._one("Softmax", x, axis=axis)

    def reduce(self, op: Literal["ReduceMin", "ReduceMax", "ReduceSum", "ReduceMean"], x: T, axis: int) -> T:
        """Reduction over one axis, keeping it (size 1)."""
        return self._one(op, x, axes=[axis], keepdims=1)

    def reduce_axes(self, op: Literal["ReduceSum", "ReduceMean"], x: T, axes: Sequence[int]) -> T:
        """Reduction over several axes, keeping them (size 1)."""
        return self._one(op, x, axes=list(axes), keepdims=1)

    def conv(self, x: T, weight: T, groups: int, window: Sliding) -> T:
        """The 2-D convolution of ``x`` with ``weight`` (C_out, C_in / groups, kh, kw), strides, pads and dilations
        from ``window``."""
        pads = [*window.pads, *window.ends]
        return self._one(
            "Conv", x, weight, group=groups, strides=list(window.strides), pads=pads, dilations=list(window.dilations)
        )

    def conv_transpose(self, x: T, weight: T, groups: int, window: Sliding, output_padding: Sequence[int]) -> T:
        """The transposed 2-D convolution of ``x`` with ``weight`` (C_in, C_out / groups, kh, kw), strides, pads
        (cropped from the output) and dilations from ``window``; ``output_padding`` extends the output's end."""
        pads = [*window.pads, *window.ends]
        return self._one(
            "ConvTranspose", x, weight, group=groups, strides=list(window.strides), pads=pads,
            dilations=list(window.dilations), output_padding=list(output_padding),
        )  # fmt: skip

    def topk(self, x: T, k: int) -> T:
        """int64 indices of the ``k`` largest values along the last axis, largest first."""
        return self.builder.node("TopK", [x], outputs=2, k=k, axis=-1, largest=1, sorted=1)[1]
