"""What the hook computes: each method's default score, and the options that belong to one method refused with
another."""

from __future__ import annotations

from typing import Any

import pytest

from ovxai.conventions import GRADIENT_METHODS
from ovxai.errors import OvxaiError
from ovxai.hook.options import DEFAULT_STEPS, HookOptions


def test_the_default_score_follows_the_method() -> None:
    assert HookOptions().score == "softmax" and not HookOptions().gradient
    for method in GRADIENT_METHODS:
        options = HookOptions(method=method)
        assert options.score == "logits" and options.gradient
    assert HookOptions(method="gradcam", score="softmax").score == "softmax"
    assert HookOptions(method="integrated-gradcam").step_count == DEFAULT_STEPS
    assert HookOptions(method="integrated-gradcam", steps=4).step_count == 4


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"method": "gradcampp"}, "unknown method= 'gradcampp'; use one of: recipro, gradcam, gradcam++"),
        ({"method": "gradcam", "mask": "gaussian"}, "mask= gaussian applies to Recipro-CAM's masked copies"),
        ({"method": "layercam", "path": "mosaic"}, "path= mosaic applies to Recipro-CAM's masked copies"),
        ({"method": "gradcam", "steps": 5}, "steps= applies to method=integrated-gradcam, not gradcam"),
        ({"steps": 5}, "steps= applies to method=integrated-gradcam, not recipro"),
        ({"method": "integrated-gradcam", "steps": 0}, "steps= 0 is not a whole number >= 1"),
        ({"method": "integrated-gradcam", "steps": True}, "steps= True is not a whole number >= 1"),
        ({"score": "probability"}, "unknown score= 'probability'; use one of: softmax, logits, sigmoid"),
    ],
)
def test_options_of_another_method_are_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(OvxaiError) as error:
        HookOptions(**options)
    assert str(error.value).startswith(message)
