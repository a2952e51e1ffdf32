"""The explanatory hook (Recipro-CAM inside the graph), written once for every graph format.

The hook is expressed against :class:`Ops`, a small set of tensor operations that each format
adapter implements by emitting nodes into its own graph (ONNX NodeProtos, OpenVINO opset nodes).
Everything is derived from the target's *runtime* shape, so the hook stores no mask constant at
all and one exported model explains any input size.

With T of shape (B, C, H, W) and N = H*W:

1. masks M (N, N): row n is the spatial mask of position n (one-hot, or the 3x3 Gaussian).
2. mosaic (B*N, C, H, W) = T[:, None] * M.reshape(1, N, 1, H, W) -- or, when the tail starts with
   a global average pool, the pooled mosaic straight from T: (M @ T.reshape(B, C, N).T) / N.
3. a copy of the tail runs on it; outside inputs of the tail are repeated N times per image.
4. scores (B*N, K) -> (B, K, N) -> min-max per (image, class) -> (B, K, H, W) ``saliency_map``.

When the tail starts with a global pool, the original path's pooled features are exposed too, as
``feature_vector`` (B, C), the name OpenVINO's Model API reads.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Generic, Literal, TypeVar

from ovxai.conventions import CLASSES_OUTPUT, FEATURE_OUTPUT, SALIENCY_OUTPUT
from ovxai.errors import OvxaiError
from ovxai.graph.ops import END, Ops
from ovxai.graph.view import SHAPE_OPS, Dim, GraphView, Kind, Node
from ovxai.hook.options import HookOptions
from ovxai.hook.tail import Classifier, Shortcut, TailPlan, final_classifier, tail_logits
from ovxai.hook.windows import WindowedCopies, plan_windows

T = TypeVar("T")


class ReciproCamHook(Generic[T]):
    """Builds the saliency branch for one tail plan through an :class:`Ops` implementation."""

    def __init__(self, ops: Ops[T], graph: GraphView, plan: TailPlan, options: HookOptions) -> None:
        self.ops, self.graph, self.plan, self.options = ops, graph, plan, options
        self.shortcut = plan.shortcut if options.fast_path else None
        self.windows = plan_windows(graph, plan, options.mask) if options.fast_path else None
        t = ops.tensor(plan.target)
        self.t = t
        self.t_shape = ops.shape(t)
        self.batch = ops.slice(self.t_shape, 0, 1)
        self.channels = ops.slice(self.t_shape, 1, 2)
        self.h = ops.slice(self.t_shape, 2, 3)
        self.w = ops.slice(self.t_shape, 3, 4)
        self.n = ops.binary("Mul", self.h, self.w)
        self.mosaic_of: dict[str, T] = {}  # original tensor name -> its counterpart in the mosaic branch
        self._classes: T | None = None  # (B, K') class ids of the maps, when explain is not 'all'

    def build(self) -> T:
        """Emit the whole branch and return the saliency tensor (also exposed as ``saliency_map``)."""
        replaced: set[str] = set()
        if self.shortcut is not None and self._pooled_are_logits(self.shortcut):
            saliency = self._saliency(self._shortcut(self.shortcut, class_major=True), class_axis=1)
            return self._outputs(saliency)
        if self.shortcut is not None:
            self.mosaic_of[self.shortcut.output] = self._shortcut(self.shortcut)
            replaced = set(self.shortcut.replaced)
        elif self.windows is not None:
            self.mosaic_of[self.windows.output] = WindowedCopies(self, self.windows).pooled()
            replaced = self.windows.replaced
        else:
            self.mosaic_of[self.plan.target] = self._mosaic()
        classifier = self._prunable()
        if classifier is not None:
            replaced |= classifier.nodes
        for node in self.plan.nodes:
            if node.name in replaced:
                continue
            if node.op in SHAPE_OPS and node.inputs[0] not in self.mosaic_of:
                # The shape of a tensor the shortcut skipped: its mosaic would have B*N rows.
                outs = [self._scaled_shape(node)]
            else:
                outs = self.ops.copy_node(node, [self._input(i) for i in node.inputs])
            self.mosaic_of.update(zip(node.outputs, outs, strict=True))
        if classifier is None:
            saliency = self._saliency(self.mosaic_of[self._logits()])
        else:
            saliency = self._saliency(self._pruned_scores(classifier), selected=True)
        return self._outputs(saliency)

    def _outputs(self, saliency: T) -> T:
        """Expose the maps, and the original path's pooled features where a global pool ends the copies."""
        target = self.graph.tensor(self.plan.target).shape or (None,) * 4
        batch = self._expose(saliency, target[2] or "height", target[3] or "width")
        pool = self._global_pool()
        if pool is not None:
            # The original path's pooled features, (B, C): the embedding OpenVINO's Model API exposes.
            channels = self.ops.slice(self.ops.shape(self.ops.tensor(pool.inputs[0])), 1, 2)
            features = self.ops.reshape(self.ops.tensor(pool.outputs[0]), self.ops.concat([self.batch, channels]))
            source = self.graph.tensor(pool.inputs[0]).shape or (None, None)
            self.ops.output(features, FEATURE_OUTPUT, (batch, source[1] or "channels"))
        return saliency

    def _pooled_are_logits(self, cut: Shortcut) -> bool:
        """The mean shortcut's pooled features are the class logits, up to reshapes (SqueezeNet: its classifier
        is a 1 x 1 convolution before the pool): the copies' logits are then computed class-major, (B, K, N),
        in the original path's layout, and the scores never move between (B, N, K) rows and (B, K, N) maps:
        with 1000 classes those two transposes were a third of the hook's kernel time."""
        if cut.kind != "mean" or cut.after:
            return False
        logits_name = tail_logits(self.graph, self.plan)
        tensor = logits_name
        while tensor != cut.output:
            node = self.graph.producer.get(tensor)
            if node is None or node.op not in ("Reshape", "Flatten", "Squeeze", "Identity"):
                return False
            tensor = node.inputs[0]
        pooled = self.graph.tensor(cut.output).shape or ()
        logits = self.graph.tensor(logits_name).shape or ()
        # (B, K, 1, 1) or (B, K) -> (B, K): the same K values per image, in the same order
        return len(logits) == 2 and len(pooled) >= 2 and logits[1] is not None and pooled[1] == logits[1]

    def _global_pool(self) -> Node | None:
        """The global average pool that ends the copies' spatial part, where the shortcut or windows found one."""
        cut = self.plan.shortcut
        if cut is not None and cut.kind == "mean":
            return cut.boundary
        return self.windows.pool if self.windows is not None else None

    @property
    def path(self) -> str:
        """How the copies are computed: "mean" / "linear" (the closed-form shortcut), "windows" (incremental), or
        "mosaic" (every copy on the whole map)."""
        if self.shortcut is not None:
            return self.shortcut.kind
        return "mosaic" if self.windows is None else "windows"

    def _expose(self, saliency: T, height: Dim, width: Dim) -> Dim:
        """Output ``saliency_map`` (B, K, height, width), and ``saliency_classes`` where explain picks classes;
        returns the batch dimension."""
        prediction = self.graph.tensor(self.plan.prediction).shape or (None, None)
        batch = (self.graph.tensor(self.plan.target).shape or (None,))[0] or prediction[0] or "batch"
        picked = self.options.explained()
        count = prediction[1] if picked is None else (picked if isinstance(picked, int) else len(picked))
        self.ops.output(saliency, SALIENCY_OUTPUT, (batch, count or "classes", height, width))
        if self._classes is not None:
            self.ops.output(self._classes, CLASSES_OUTPUT, (batch, count or "classes"))
        return batch

    def _selected(self, scores: T, class_axis: Literal[1, 2]) -> T:
        """The scores of the classes ``explain`` asks for, from (B, N, K) rows or (B, K, N) columns, and their
        ids as ``self._classes`` (B, K'). Rows are selected before they are laid out class-major, so that only
        K' columns move (5 classes of 1000).

        topK takes each image's K best classes by the model's own prediction output; fixed ids are
        the same for every image."""
        ops = self.ops
        picked = self.options.explained()
        if picked is None:
            return scores
        chosen = self._chosen()
        if isinstance(picked, int):
            spread = ops.expand(ops.unsqueeze(chosen, 3 - class_axis), self._per_image(ops.i64([picked]), class_axis))
            return ops.gather_elements(scores, spread, class_axis)
        return ops.gather(scores, chosen, class_axis)

    def _per_image(self, classes: T, class_axis: Literal[1, 2]) -> T:
        """The shape of one image's scores: (B, N, classes) rows or (B, classes, N) columns."""
        dims = [self.batch, self.n, classes] if class_axis == 2 else [self.batch, classes, self.n]
        return self.ops.concat(dims)

    def _chosen(self) -> T:
        """The classes ``explain`` asks for: (B, K') by each image's prediction (topK) or the ids (K',);
        their (B, K') ids become ``self._classes``."""
        ops = self.ops
        picked = self.options.explained()
        assert picked is not None
        if isinstance(picked, int):
            scores = ops.reshape(ops.tensor(self.plan.prediction), ops.concat([self.batch, ops.i64([-1])]))
            self._classes = ops.topk(scores, picked)  # (B, K')
            return self._classes
        ids = ops.i64(list(picked))
        self._classes = ops.expand(ops.unsqueeze(ids, 0), ops.concat([self.batch, ops.i64([len(picked)])]))
        return ids

    def _prunable(self) -> Classifier | None:
        """The final classifier, when each map needs only its own class's logit (score logits or sigmoid) and
        only some classes get a map: the copies then run only those classes' rows of its weight."""
        if self.options.score == "softmax" or self.options.explained() is None:
            return None
        found = final_classifier(self.graph, self.plan.nodes, tail_logits(self.graph, self.plan))
        if found is None or (self.shortcut is not None and found.product.name in self.shortcut.replaced):
            return None  # the linear shortcut already gives every class's copies from the original product
        return found

    def _pruned_scores(self, classifier: Classifier) -> T:
        """The copies' logits of the chosen classes only: (B*N, D) rows times those classes' weight rows."""
        ops = self.ops
        picked = self.options.explained()
        product = classifier.product
        chosen = self._chosen()
        rows = self._input(product.inputs[0])
        assert rows is not None
        weight = ops.gather(ops.tensor(product.inputs[1]), chosen, 0 if product.transpose_b else 1)
        if isinstance(picked, int):  # per image: (B, N, D) @ (B, D, K')
            rows = ops.reshape(rows, ops.concat([self.batch, self.n, ops.i64([-1])]))
            weight = ops.transpose(weight, [0, 2, 1] if product.transpose_b else [1, 0, 2])
        elif product.transpose_b:  # (K', D) -> (D, K')
            weight = ops.transpose(weight, [1, 0])
        scores = ops.matmul(rows, weight)
        if classifier.bias is not None:
            bias = ops.gather(ops.reshape(ops.tensor(classifier.bias), ops.i64([-1])), chosen, 0)
            scores = ops.binary("Add", scores, ops.unsqueeze(bias, 1) if isinstance(picked, int) else bias)
        return scores

    def _logits(self) -> str:
        """The tensor holding the class logits: a model that ends in Softmax or Sigmoid already
        turned them into probabilities, and scoring those again would flatten the map."""
        final = self.graph.producer.get(self.plan.prediction)
        if final is not None and final.op in ("Softmax", "Sigmoid") and final.inputs[0] in self.mosaic_of:
            return final.inputs[0]
        return self.plan.prediction

    # -- masks and mosaic -------------------------------------------------------------------------

    def _masks(self) -> T:
        """(N, N) float matrix; row n is position n's mask over all N positions."""
        ops = self.ops
        idx = ops.cast(ops.arange(self.n), "float32")
        width = ops.cast(self.w, "float32")
        row = ops.unary("Floor", ops.binary("Div", idx, width))
        col = ops.binary("Sub", idx, ops.binary("Mul", row, width))

        def kernel_1d(coord: T) -> T:
            distance = ops.unary("Abs", ops.binary("Sub", ops.unsqueeze(coord, 1), ops.unsqueeze(coord, 0)))
            if self.options.mask == "onehot":
                return ops.unary("Relu", ops.binary("Sub", ops.f32(1.0), distance))  # 1, 0, 0, ...
            # [1, 2, 1] / 4 along one axis; the outer product of two is the 3x3 kernel / 16.
            return ops.binary("Div", ops.unary("Relu", ops.binary("Sub", ops.f32(2.0), distance)), ops.f32(4.0))

        masks = ops.binary("Mul", kernel_1d(row), kernel_1d(col))
        return ops.cast(masks, self.ops.dtype(self.plan.target))

    def _mosaic(self) -> T:
        """(B*N, C, H, W): every image's feature map times each of the N masks.

        The product runs on 4-D views, (B, 1, C, H*W) x (1, N, 1, H*W): with a dynamic batch,
        OpenVINO's CPU plugin runs this 2-3x faster than the same broadcast over 5-D tensors."""
        ops = self.ops
        one = ops.i64([1])
        flat = ops.reshape(self.t, ops.concat([self.batch, one, self.channels, self.n]))
        masks = ops.reshape(self._masks(), ops.concat([one, self.n, one, self.n]))
        tiled = ops.binary("Mul", flat, masks)
        return ops.reshape(tiled, ops.concat([ops.i64([-1]), ops.slice(self.t_shape, 1, 4)]))

    # -- the exact shortcut (see graph.Shortcut) ---------------------------------------------------

    def _shortcut(self, cut: Shortcut, class_major: bool = False) -> T:
        """The boundary node's output for all B*N copies, (B*N, ...), computed without the mosaic;
        ``class_major``: a mean boundary's as (B, C', N), copy n in column n.

        Every copy is "a few scaled columns of U over a background z": ``parts`` pairs an (N, N)
        placement matrix A with columns D (B, C', N) so that copy n's non-background content is
        sum_j (A_j D_j^T)[n]. One-hot: A = I and D = U - z (U read from the original path).
        Gaussian: one part per kernel weight s in {4, 2, 1}/16, D_s = P(s T) - z. With no
        positionwise op, z = 0 and everything is linear: one part, the mask matrix itself, with D = T.
        """
        if cut.kind == "linear":
            return self._linear(cut)
        ops = self.ops
        dtype = ops.dtype(cut.source)
        source_shape = ops.shape(ops.tensor(cut.source))
        channels = ops.slice(source_shape, 1, 2)
        background = self._background(cut) if cut.positionwise else None
        parts: list[tuple[T | None, T]] = []
        if not cut.positionwise:
            parts.append((None if self.options.mask == "onehot" else self._masks(), self.t))
        elif self.options.mask == "onehot":
            parts.append((None, ops.binary("Sub", ops.tensor(cut.source), background)))  # type: ignore[arg-type]
        else:
            parts.extend((placement, ops.binary("Sub", column, background)) for placement, column in self._scaled(cut))  # type: ignore[arg-type]
        flat_shape = ops.concat([self.batch, channels, self.n])
        n = ops.cast(self.n, dtype)
        if class_major:
            return self._pooled_columns(parts, background, flat_shape, n)
        if cut.after:
            return self._after_pool(cut, self._pooled_map(parts, background, flat_shape, n))
        pooled = self._pooled_rows(parts, background, flat_shape, n)
        dims = [ops.i64([-1]), channels] + ([ops.i64([1, 1])] if cut.keepdims else [])
        return ops.reshape(pooled, ops.concat(dims))

    def _pooled_rows(self, parts: list[tuple[T | None, T]], background: T | None, flat_shape: T, n: T) -> T:
        """(B, N, C'): row n is copy n's pooled features."""
        return self.ops.transpose(self._pooled_columns(parts, background, flat_shape, n), [0, 2, 1])

    def _pooled_columns(self, parts: list[tuple[T | None, T]], background: T | None, flat_shape: T, n: T) -> T:
        """(B, C', N): column n is copy n's pooled features, (sum of its columns + N z) / N, i.e.
        (sum_j D_j A_j^T + N z) / N: each part's columns placed by its (N, N) matrix (None: I)."""
        ops = self.ops
        total: T | None = None
        for placement, columns in parts:
            flat = ops.reshape(columns, flat_shape)
            placed = flat if placement is None else ops.matmul(flat, ops.transpose(placement, [1, 0]))
            total = placed if total is None else ops.binary("Add", total, placed)
        assert total is not None
        if background is not None:  # the N - |footprint| background positions, plus z under each column
            total = ops.binary("Add", total, ops.binary("Mul", ops.reshape(background, ops.i64([1, -1, 1])), n))
        return ops.binary("Div", total, n)

    def _pooled_map(self, parts: list[tuple[T | None, T]], background: T | None, flat_shape: T, n: T) -> T:
        """Copy n's pooled features laid out at position n of a (B, C', H, W) map."""
        map_shape = self.ops.concat([self.ops.slice(flat_shape, 0, 2), self.h, self.w])
        return self.ops.reshape(self._pooled_columns(parts, background, flat_shape, n), map_shape)

    def _after_pool(self, cut: Shortcut, pooled_map: T) -> T:
        """The per-position ops after the pool run on the pooled map, then the copies become (B*N, C'', 1, 1) rows."""
        ops = self.ops
        result = self._copied(cut.after, {cut.boundary.outputs[0]: pooled_map})[cut.output]
        channels = ops.slice(ops.shape(result), 1, 2)
        rows = ops.transpose(ops.reshape(result, ops.concat([self.batch, channels, self.n])), [0, 2, 1])
        return ops.reshape(rows, ops.concat([ops.i64([-1]), channels, ops.i64([1, 1])]))

    def _scaled(self, cut: Shortcut) -> list[tuple[T, T]]:
        """Gaussian mask through positionwise ops: per kernel weight s in {4, 2, 1}/16, the (N, N) placement of
        s (where mask n holds s) and the positionwise ops' response to s T, (B, C', H, W)."""
        ops = self.ops
        dtype = ops.dtype(cut.source)
        masks = self._masks()
        parts = []
        for weight in (4.0, 2.0, 1.0):
            scaled = ops.binary("Mul", self.t, ops.cast(ops.f32(weight / 16), ops.dtype(self.plan.target)))
            placement = ops.cast(ops.binary("Equal", masks, ops.cast(ops.f32(weight / 16), dtype)), dtype)
            parts.append((placement, self._positionwise(cut, scaled)))
        return parts

    def _linear(self, cut: Shortcut) -> T:
        """Flatten + x @ W (+ b) for the original path and for every copy, from one per-position product.

        P_n = W_n U[:, n] (W_n: W's columns of position n) for all n in one batched product with the re-laid
        weight (N, C', K), the only copy of W left in the model: the original output becomes sum_n P_n + b (the
        same multiply-adds as before, summed in another order), and copy n is
        P_n + b + sum_{m != n} W_m z (one-hot; the Gaussian mask places several positions' products)."""
        ops = self.ops
        product = cut.boundary
        _, c, h, w = self._static(cut.source)
        n = h * w
        if product.transpose_b:  # (K, C'*N) -> (K, C', N) -> (N, C', K)
            weight = ops.relaid(product.inputs[1], [-1, c, n], [2, 1, 0])
            classes = self._static(product.inputs[1])[0]
        else:  # (C'*N, K) -> (C', N, K) -> (N, C', K)
            weight = ops.relaid(product.inputs[1], [c, n, -1], [1, 0, 2])
            classes = self._static(product.inputs[1])[1]
        columns_shape = ops.i64([-1, c, n])

        def products(columns: T) -> T:  # (B, C', H, W) -> (N, B, C') @ (N, C', K) -> (N, B, K)
            return ops.matmul(ops.transpose(ops.reshape(columns, columns_shape), [2, 0, 1]), weight)

        bias = ops.tensor(product.inputs[2]) if len(product.inputs) > 2 and product.inputs[2] else None
        per_position = products(ops.tensor(cut.source))
        original = ops.reshape(ops.reduce("ReduceSum", per_position, 0), ops.i64([-1, classes]))
        ops.replace(product.outputs[0], original if bias is None else ops.binary("Add", original, bias))

        def rows(x: T) -> T:  # (N, B, K) -> (B, N, K)
            return ops.transpose(x, [1, 0, 2])

        if self.options.mask == "onehot":
            copies = rows(per_position)
        elif cut.homogeneous or not cut.positionwise:  # copy n at p is m_n(p) U[:, p]: the masks place P
            copies = ops.matmul(self._masks(), rows(per_position))
        else:
            placed: list[tuple[T | None, T]] = [(a, products(column)) for a, column in self._scaled(cut)]
            copies = self._placed(placed, rows)
        offset = bias if cut.homogeneous or not cut.positionwise else self._linear_background(cut, products, bias)
        if offset is not None:
            copies = ops.binary("Add", copies, offset)
        return ops.reshape(copies, ops.i64([-1, classes]))

    def _static(self, name: str) -> tuple[int, ...]:
        """The dimensions of a tensor the plan requires to be static (beyond its batch)."""
        shape = self.graph.tensor(name).shape or ()
        return tuple(d if isinstance(d, int) else -1 for d in shape)

    def _linear_background(self, cut: Shortcut, products: Callable[[T], T], bias: T | None) -> T:
        """(N, K): what the background adds to copy n, b + sum_m W_m z - sum_{p in n's footprint} W_p z.

        Built from constants only (static shapes): the engines fold it once, at load."""
        ops = self.ops
        _, c, h, w = self._static(cut.source)
        channels = (*self._static(self.plan.target), -1, -1)[1]  # -1: unknown, read at run time
        static = ops.i64([channels]) if channels > 0 else self.channels
        z = self._positionwise(cut, self._zeros(ops.dtype(self.plan.target), static))
        full = ops.expand(z, ops.i64([1, c, h, w]))
        per_position = ops.reshape(products(full), ops.i64([h * w, -1]))  # (N, K): W_n z
        inside = per_position
        if self.options.mask != "onehot":  # the footprint of mask n: the positions it does not leave at z
            masks = self._masks()
            dtype = ops.dtype(cut.source)
            footprint = ops.cast(
                ops.binary("Greater", masks, ops.cast(ops.f32(0.0), ops.dtype(self.plan.target))), dtype
            )
            inside = ops.matmul(footprint, per_position)
        offset = ops.binary("Sub", ops.reduce("ReduceSum", per_position, 0), inside)
        return offset if bias is None else ops.binary("Add", offset, bias)

    def _placed(self, parts: list[tuple[T | None, T]], per_position: Callable[[T], T]) -> T:
        """sum_j A_j @ f(D_j): each part's per-position rows (B, N, ...) placed by its (N, N) matrix (None: I)."""
        total: T | None = None
        for placement, columns in parts:
            rows = per_position(columns)
            rows = rows if placement is None else self.ops.matmul(placement, rows)
            total = rows if total is None else self.ops.binary("Add", total, rows)
        assert total is not None
        return total

    def _zeros(self, dtype: str, channels: T | None = None) -> T:
        """A (1, C, 1, 1) map of zeros with T's channels (``channels``: that count, as a 1-element tensor)."""
        ops = self.ops
        one = ops.i64([1])
        return ops.expand(
            ops.cast(ops.f32(0.0), dtype), ops.concat([one, self.channels if channels is None else channels, one, one])
        )

    def _background(self, cut: Shortcut) -> T:
        """z: the positionwise ops' response to a zero column, (1, C', 1, 1)."""
        return self._positionwise(cut, self._zeros(self.ops.dtype(self.plan.target)))

    def _positionwise(self, cut: Shortcut, start: T) -> T:
        """A copy of the positionwise ops run on ``start`` in place of T: the counterpart of ``cut.source``."""
        return self._copied(cut.positionwise, {self.plan.target: start})[cut.source]

    def _copied(self, nodes: Sequence[Node], values: dict[str, T]) -> dict[str, T]:
        """Copies of a chain of nodes reading ``values`` for the tensors given there, the originals' otherwise."""
        for node in nodes:
            inputs = [values[i] if i in values else (self.ops.tensor(i) if i else None) for i in node.inputs]
            values.update(zip(node.outputs, self.ops.copy_node(node, inputs), strict=True))
        return values

    # -- inputs of the copied tail ----------------------------------------------------------------

    def _input(self, name: str) -> T | None:
        if not name:
            return None  # an omitted optional input
        if name not in self.mosaic_of:
            kind = self.graph.kind.get(name, Kind.CONSTANT)
            if kind is Kind.CONSTANT:
                return self.ops.tensor(name)
            self.mosaic_of[name] = self._repeated(name) if kind is Kind.ACTIVATION else self._shape_input(name)
        return self.mosaic_of[name]

    def _repeated(self, name: str) -> T:
        """An activation from before the target (a skip path): (B, ...) -> (B*N, ...), each image N times."""
        ops = self.ops
        rank = self.graph.tensor(name).rank
        assert rank is not None  # plan_tail refuses unknown ranks
        x = ops.tensor(name)
        tiled = ops.expand(ops.unsqueeze(x, 1), ops.concat([self.n, ops.i64([1] * (rank - 1))]))
        return ops.reshape(tiled, ops.concat([ops.i64([-1]), ops.slice(ops.shape(x), 1, rank)]))

    def _shape_input(self, name: str) -> T:
        """A value computed from activations' shapes (e.g. ``x.view(x.size(0), -1)``), seen by B*N rows."""
        node = self.graph.producer.get(name)
        if node is None:
            raise OvxaiError(f"cannot trace where '{name}' comes from", "re-export the model with shapes folded")
        if node.op in SHAPE_OPS:
            if self.graph.kind.get(node.inputs[0]) is Kind.SHAPE:
                return self.ops.tensor(name)  # the shape of a shape: a rank, independent of the batch
            return self._scaled_shape(node)
        outs = self.ops.copy_node(node, [self._input(i) for i in node.inputs])
        self.mosaic_of.update(zip(node.outputs, outs, strict=True))
        return self.mosaic_of[name]

    def _scaled_shape(self, node: Node) -> T:
        """Shape/Size of a batch-B tensor, as it would read on the B*N-row mosaic branch."""
        ops = self.ops
        original = ops.tensor(node.outputs[0])
        if node.op == "Size":
            return ops.binary("Mul", original, ops.reshape(self.n, ops.i64([])))
        start = node.start
        rank = self.graph.tensor(node.inputs[0]).rank
        if start < 0 and rank is not None:
            start += rank
        if start != 0:
            return original  # the batch dimension is not part of this shape
        head = ops.binary("Mul", ops.slice(original, 0, 1), self.n)
        return ops.concat([head, ops.slice(original, 1, END)])

    # -- scores to saliency -----------------------------------------------------------------------

    def _saliency(self, scores: T, selected: bool = False, class_axis: Literal[1, 2] = 2) -> T:
        """(B*N, K...) rows of scores (``class_axis`` 2) or (B, K, N) class-major ones (1) -> (B, K, H, W) maps,
        min-max normalised per image and class; ``selected``: the scores are already those of the classes
        ``explain`` asks for."""
        ops = self.ops
        per_image = ops.cast(ops.reshape(scores, self._per_image(ops.i64([-1]), class_axis)), "float32")
        if self.options.score == "softmax":
            per_image = ops.softmax(per_image, class_axis)
        elif self.options.score == "sigmoid":
            per_image = ops.unary("Sigmoid", per_image)
        maps = per_image if selected else self._selected(per_image, class_axis)
        if class_axis == 2:
            maps = ops.transpose(maps, [0, 2, 1])  # (B, K', N)
        low = ops.reduce("ReduceMin", maps, 2)
        span = ops.binary("Sub", ops.reduce("ReduceMax", maps, 2), low)
        # A constant map has span 0 and maps - low == 0 everywhere: dividing by 1 gives zeros, not NaN.
        span = ops.where(ops.binary("Greater", span, ops.f32(0.0)), span, ops.f32(1.0))
        maps = ops.binary("Div", ops.binary("Sub", maps, low), span)
        maps = ops.reshape(maps, ops.concat([self.batch, ops.i64([-1]), self.h, self.w]))
        if self.options.saliency_dtype == "uint8":
            maps = ops.cast(ops.unary("Round", ops.binary("Mul", maps, ops.f32(255.0))), "uint8")
        return maps
