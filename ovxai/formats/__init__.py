"""Graph formats: the one interface the exporter talks to, and the adapter for each file suffix.

An adapter turns its format's model into the format-neutral :class:`~ovxai.graph.view.GraphView`,
applies plans made on that view (input shape, freed batch, the hook through its :class:`~ovxai.graph.ops.Builder`),
and writes, checks and converts files. Everything decided about a model is decided once, on the view;
adapters only carry it out.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from ovxai.errors import OvxaiError

if TYPE_CHECKING:
    from ovxai.graph.batch import ReshapeFix
    from ovxai.graph.ops import Builder
    from ovxai.graph.view import GraphView
    from ovxai.metadata import Entries, ModelInfo


class Format(Protocol):
    """One graph format (ONNX, OpenVINO IR). ``Any`` stands for the format's own model object."""

    name: str
    suffix: str  # the model file's suffix, lower case

    def load(self, path: Path) -> Any:
        """Read and validate a model file, or raise a one-line :class:`OvxaiError`."""
        ...

    def view(self, model: Any) -> GraphView:
        """The format-neutral view: nodes with ONNX op names and typed attributes, shapes, constants."""
        ...

    def fold_static_shapes(self, model: Any) -> None:
        """Replace the values computed from shapes that the model's fixed dimensions determine by constants
        (the engine would fold them when compiling; the prediction does not change)."""
        ...

    def set_input_shape(self, model: Any, name: str, dims: Sequence[int | str]) -> None:
        """Pin (ints) or free (names) the dimensions of input ``name``; later views see the new shapes."""
        ...

    def rewrite_reshapes(self, model: Any, fixes: Sequence[ReshapeFix]) -> None:
        """Give each Reshape its new target, where 0 copies the data's dimension."""
        ...

    def builder(self, model: Any, graph: GraphView) -> Builder[Any]:
        """The node factory the hook's :class:`~ovxai.graph.ops.Ops` emit through, into ``model``."""
        ...

    def set_metadata(self, model: Any, entries: Entries) -> None: ...

    def metadata(self, model: Any) -> ModelInfo:
        """What the model records about itself (written by :meth:`set_metadata`, or by another tool)."""
        ...

    def save(self, model: Any, path: Path, fp16: bool) -> list[Path]:
        """Write ``path`` (and its weight files); ``fp16`` compresses weights where the format does that."""
        ...

    def convert(self, path: Path) -> Any:
        """A model of this format from a file of another format (ONNX -> IR)."""
        ...

    precisions: tuple[str, ...]  # the engine configurations a delivered model is checked in

    def smoke_run(self, path: Path, x: np.ndarray, precision: str) -> dict[str, np.ndarray]:
        """Load the written file in the format's engine, configured for ``precision`` (one of ``precisions``), and
        run it once on ``x``: the outputs by name."""
        ...

    def mantissa_bits(self, precision: str) -> int:
        """The mantissa bits of the floating-point type the engine computes in for ``precision``."""
        ...


def format_for(path: Path, role: str = "model") -> Format:
    """The adapter for a file, by its suffix (any case)."""
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        from ovxai.formats.onnx import ONNX

        return ONNX
    if suffix == ".xml":
        from ovxai.formats.openvino import OPENVINO

        return OPENVINO
    raise OvxaiError(f"{role}= '{path}' is neither ONNX (.onnx) nor OpenVINO IR (.xml)", "use a .onnx or .xml file")
