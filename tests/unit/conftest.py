"""Fixtures shared by the unit tier."""

from __future__ import annotations

import pytest
from graphs import resnet_model

from ovxai.formats.onnx import ONNX
from ovxai.graph.view import GraphView


@pytest.fixture(scope="module")
def resnet() -> GraphView:
    return ONNX.view(resnet_model())
