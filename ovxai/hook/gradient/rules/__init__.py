"""The backward rule of every op a classifier's tail holds, by the op's ONNX name (the view's vocabulary): one
table, each rule a small function in the module of its family. An op missing here is refused with its name."""

from __future__ import annotations

from ovxai.hook.gradient.rules import activations, arithmetic, layout, linear, normalization, pooling, quantizers
from ovxai.hook.gradient.rules.rule import Rule

RULES: dict[str, Rule] = {
    **linear.RULES,
    **pooling.RULES,
    **layout.RULES,
    **arithmetic.RULES,
    **activations.RULES,
    **normalization.RULES,
    **quantizers.RULES,
}

__all__ = ["RULES", "Rule"]
