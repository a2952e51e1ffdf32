"""Target resolution: turn ``--layer`` (module path, node name, tensor name or nothing) into one tensor."""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from ovxai.conventions import HOOK_OUTPUTS, SALIENCY_OUTPUT
from ovxai.errors import OvxaiError
from ovxai.graph.view import QUANTIZERS, SHAPE_OPS, GraphView, Kind, Node, keeps_zero
from ovxai.hook.tail import plan_tail


@dataclass(frozen=True)
class Candidate:
    """A feature map the hook can explain: the tensor leaving ``layer``."""

    layer: str
    tensor: str
    shape: tuple[int | str | None, ...]

    @property
    def chw(self) -> str:
        return "x".join("?" if d is None else str(d) for d in self.shape[1:])

    @property
    def n(self) -> int | None:
        if len(self.shape) != 4:
            return None
        h, w = self.shape[2], self.shape[3]
        return h * w if isinstance(h, int) and isinstance(w, int) else None


def is_feature_map(graph: GraphView, name: str) -> bool:
    """A float (B, C, H, W) activation whose H and W are the image's own axes, carried through the network."""
    t = graph.tensor(name)
    return (
        t.rank == 4
        and t.is_float
        and graph.kind.get(name) is Kind.ACTIVATION
        and graph.spatial_axes.get(name) == (2, 3)
    )


def scope_paths(scope: str) -> list[str]:
    """'layer4.1.relu' -> ['layer4', 'layer4.1', 'layer4.1.relu']."""
    parts = scope.split(".") if scope else []
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def leaving_tensors(graph: GraphView, module: str) -> list[str]:
    """Tensors produced inside the module scope and read outside it (or returned by the graph)."""
    inside = {n.name for n in graph.nodes if module in scope_paths(n.scope)}
    leaving: list[str] = []
    for node in graph.nodes:
        if node.name not in inside:
            continue
        for out in node.outputs:
            readers = graph.consumers.get(out, [])
            if out in graph.outputs or any(r.name not in inside for r in readers):
                leaving.append(out)
    return leaving


def candidates(graph: GraphView, prediction: str, max_depth: int | None = 2) -> list[Candidate]:
    """Module scopes (up to ``max_depth`` levels) whose single leaving tensor is a feature map."""
    feeding = graph.ancestors([prediction])
    modules: dict[str, None] = {}
    for node in graph.nodes:
        for path in scope_paths(node.scope):
            if max_depth is None or path.count(".") < max_depth:
                modules[path] = None
    found: dict[str, Candidate] = {}
    for module in modules:
        maps = [t for t in leaving_tensors(graph, module) if is_feature_map(graph, t)]
        if len(maps) == 1 and graph.producer[maps[0]].name in feeding and _spatial(graph, maps[0]):
            shape = graph.tensor(maps[0]).shape
            assert shape is not None
            found.setdefault(maps[0], Candidate(module, maps[0], shape))
    order = {n.name: i for i, n in enumerate(graph.nodes)}
    return sorted(found.values(), key=lambda c: order[graph.producer[c.tensor].name])


def pick_prediction(graph: GraphView, name: str | None) -> str:
    """The classification output: a float (B, K) tensor (trailing 1s allowed) computed from a feature map."""
    if SALIENCY_OUTPUT in graph.outputs or SALIENCY_OUTPUT in graph.aliases:
        raise OvxaiError(
            f"the model already has a '{SALIENCY_OUTPUT}' output", "use the original model, not a patched one"
        )
    if name is not None:
        if name not in graph.outputs:
            raise OvxaiError(f"'{name}' is not an output of the model", f"choose one of: {', '.join(graph.outputs)}")
        return name
    found = [o for o in graph.outputs if _is_scores(graph, o)]
    if len(found) == 1:
        return found[0]
    if found:
        raise OvxaiError(f"several outputs look like class scores: {', '.join(found)}", "pick one with prediction=")
    shapes = ", ".join(f"{o} ({graph.tensor(o).describe()})" for o in graph.outputs)
    hidden = [n for n in graph.nodes if n.has_subgraph and n.name in graph.ancestors(graph.outputs)]
    if hidden:
        raise OvxaiError(
            f"the outputs ({shapes}) come through '{hidden[-1].name}' ({hidden[-1].op}), a node with a subgraph "
            "that hides where the class scores are computed",
            "re-export the model without control flow in the head (e.g. fold the If), or name it with prediction=",
        )
    raise OvxaiError(
        f"no classification output (B, K) computed from a 4-D feature map among the outputs: {shapes}",
        "export a CNN classifier, or name its score output with prediction=",
    )


def _is_scores(graph: GraphView, name: str) -> bool:
    t = graph.tensor(name)
    if name in HOOK_OUTPUTS or not t.is_float or t.shape is None or len(t.shape) < 2:
        return False
    if any(d != 1 for d in t.shape[2:]):
        return False
    feeding = graph.ancestors([name])
    return any(is_feature_map(graph, o) for n in graph.nodes if n.name in feeding for o in n.outputs)


def resolve(graph: GraphView, prediction: str, layer: str | None) -> Candidate:
    """The target tensor for ``layer``; ``None`` picks the last spatial feature map feeding the head."""
    if layer is None:
        return _automatic(graph, prediction)
    tensor = graph.aliases.get(layer, layer)
    if tensor in graph.producer:  # a tensor name
        return _checked(graph, layer, tensor)
    by_node = [n for n in graph.nodes if n.name == layer]
    if by_node:
        outs = [o for o in by_node[0].outputs if o]
        if len(outs) != 1:
            raise OvxaiError(f"node '{layer}' has {len(outs)} outputs", f"name one of them: {', '.join(outs)}")
        return _checked(graph, layer, outs[0])
    leaving = leaving_tensors(graph, layer)
    if not leaving and not any(n.scope for n in graph.nodes):
        raise OvxaiError(
            f"layer '{layer}' not found: the model carries no PyTorch module paths (converted from torch.export?)",
            "name a tensor or node (see `ovxai inspect`), or convert with ov.convert_model(module, example_input=...)",
        )
    if not leaving:
        raise OvxaiError(f"layer '{layer}' not found in the model", _closest(graph, prediction, layer))
    maps = [t for t in leaving if is_feature_map(graph, t)]
    if len(maps) > 1:
        listed = ", ".join(f"'{t}' ({graph.tensor(t).describe()})" for t in maps)
        raise OvxaiError(
            f"layer '{layer}' is ambiguous: {len(maps)} feature maps leave it: {listed}",
            "pass one of these tensor names, or a deeper module path, as layer=",
        )
    return _checked(graph, layer, maps[0] if maps else leaving[-1])


def _checked(graph: GraphView, layer: str, tensor: str) -> Candidate:
    channels_first = _channels_first(graph, tensor)
    if channels_first != tensor:
        return _checked(graph, layer, channels_first)
    tap = _quantized_tap(graph, layer, tensor)
    if tap != tensor:
        return _checked(graph, layer, tap)
    t = graph.tensor(tensor)
    if t.rank == 4 and not _spatial(graph, tensor):
        raise OvxaiError(
            f"layer '{layer}' gives a {t.describe()} map: with H x W = 1 there is one position, so every map is flat",
            "pick a layer before the global pool (see `ovxai inspect`)",
        )
    if not is_feature_map(graph, tensor):
        why = "not a 4-D float feature map (B, C, H, W)"
        if t.rank == 4 and t.is_float and graph.spatial_axes.get(tensor) != (2, 3):
            why = "a 4-D tensor whose last two axes are not the image's height and width (tokens, a permuted map)"
        raise OvxaiError(
            f"layer '{layer}' gives tensor '{tensor}' of shape {t.describe()} ({t.dtype or 'unknown type'}), {why}",
            "pick a convolutional layer (see `ovxai inspect`)",
        )
    assert t.shape is not None
    return Candidate(layer, tensor, t.shape)


NCHW_TO_NHWC = (0, 2, 3, 1)


def _channels_first(graph: GraphView, tensor: str) -> str:
    """The NCHW tensor behind a channels-last one: the hook masks H and W, so it needs (B, C, H, W).

    A map transposed to NHWC is the same data as the transpose's input, so the target steps back
    to it (the transpose becomes part of the tail). A channels-last map with no such transpose
    (e.g. pooled over axes 1 and 2) cannot be masked correctly and is refused.
    """
    node = graph.producer.get(tensor)
    transposed = node is not None and node.op == "Transpose" and node.perm == NCHW_TO_NHWC
    if node is not None and transposed and is_feature_map(graph, node.inputs[0]):
        return node.inputs[0]
    if graph.spatial_axes.get(tensor) != (2, 3):
        return tensor
    for reader in graph.consumers.get(tensor, []):
        if reader.op == "ReduceMean" and reader.axes == (1, 2):
            raise OvxaiError(
                f"tensor '{tensor}' is channels-last (NHWC): '{reader.name}' averages it over axes 1 and 2",
                "pick the NCHW feature map that comes out of the last convolution",
            )
    return tensor


def _quantized_tap(graph: GraphView, layer: str, tensor: str) -> str:
    """Where the hook reads a map that a quantiser (FakeQuantize, or a Q/DQ pair) passes through.

    Masking commutes with a quantiser that maps 0 to 0, and the hook then reads its output: the pool
    behind it reads the target directly (the fast path stays) and the copied tail sees the same
    quantised values as the original. A quantiser that moves 0 must be masked before: step back.
    """
    node = graph.producer.get(tensor)
    if node is not None and node.op in QUANTIZERS:
        if keeps_zero(graph, node):
            return tensor
        source = node.inputs[0]
        if node.op == "DequantizeLinear" and source in graph.producer:
            source = graph.producer[source].inputs[0]
        if not is_feature_map(graph, source):
            raise OvxaiError(
                f"layer '{layer}' is quantised by '{node.name}', which does not map 0 to 0, and the map before it "
                "cannot be masked",
                "name a layer outside the quantised region, or quantise with a zero point inside the range",
            )
        return source
    readers = [r for r in graph.consumers.get(tensor, []) if r.op not in SHAPE_OPS]
    if len(readers) == 1 and readers[0].op in ("FakeQuantize", "QuantizeLinear"):
        quantizer = readers[0]
        if quantizer.op == "QuantizeLinear":
            after = [r for r in graph.consumers.get(quantizer.outputs[0], []) if r.op == "DequantizeLinear"]
            quantizer = after[0] if len(after) == 1 else quantizer
        if (
            quantizer.op != "QuantizeLinear"
            and keeps_zero(graph, quantizer)
            and is_feature_map(graph, quantizer.outputs[0])
        ):
            return quantizer.outputs[0]
    return tensor


def _automatic(graph: GraphView, prediction: str) -> Candidate:
    feeding = graph.ancestors([prediction])
    every = [out for node in graph.nodes if node.name in feeding for out in node.outputs if is_feature_map(graph, out)]
    maps = [out for out in every if _spatial(graph, out) and not _identity_pool(graph, graph.producer[out])]
    if not maps and every:
        last = graph.tensor(every[-1])
        raise OvxaiError(
            f"every feature map feeding the prediction output '{prediction}' is 1 x 1 at this input size (the last: "
            f"'{last.name}', {last.describe()}): with one position, every map is flat",
            "give the model a larger input with input_shape=, if it takes one",
        )
    if not maps:
        raise OvxaiError(
            f"no 4-D feature map with H*W > 1 feeds the prediction output '{prediction}'",
            "is this a convolutional classifier? name the layer with layer=",
        )
    # Prefer a clean cut: a tail that reads nothing from before the target but weights and shapes.
    chosen = maps[-1]
    for name in reversed(maps[-8:]):
        plan = plan_tail(graph, name, prediction)
        if all(kind is not Kind.ACTIVATION for kind in plan.side_inputs.values()):
            chosen = name
            break
    # Name it by the outermost module it leaves ('layer4' rather than 'layer4.2.relu').
    modules = {c.tensor: c.layer for c in candidates(graph, prediction, max_depth=None)}
    return _checked(graph, modules.get(chosen) or graph.producer[chosen].scope or graph.producer[chosen].name, chosen)


def _identity_pool(graph: GraphView, node: Node) -> bool:
    """A pool that keeps the shape (VGG's adaptive 7x7 pool on a 7x7 map): the map before it is the target."""
    pools = ("AveragePool", "MaxPool", "AvgPool", "GlobalAveragePool")
    return node.op in pools and graph.tensor(node.inputs[0]).shape == graph.tensor(node.outputs[0]).shape


def _spatial(graph: GraphView, name: str) -> bool:
    shape = graph.tensor(name).shape
    assert shape is not None
    h, w = shape[2], shape[3]
    return not (isinstance(h, int) and isinstance(w, int) and h * w <= 1)


def _closest(graph: GraphView, prediction: str, layer: str) -> str:
    known = candidates(graph, prediction, max_depth=None)
    shapes = {c.layer: c.chw for c in known}
    for node in graph.nodes:
        if node.outputs and is_feature_map(graph, node.outputs[0]):
            shapes.setdefault(
                node.name, Candidate(node.name, node.outputs[0], graph.tensor(node.outputs[0]).shape or ()).chw
            )
    close = difflib.get_close_matches(layer, list(shapes), n=5, cutoff=0.4) or [c.layer for c in known[-5:]]
    if not close:
        return "run `ovxai inspect` to list the layers"
    shown = ", ".join(f"{name} ({shapes[name]})" for name in close)
    return f"closest: {shown} (all: `ovxai inspect`)"
