"""The serving batcher on both engines: requests that wait together run as one inference and each gets its own
rows back, equal to running it alone; a request over max_batch_size runs in parts; a failing engine fails only
the requests of its batch."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
from conftest import NETS
from runners import run

from ovxai.runtime.backends import open_session
from ovxai.serving.batching import Batcher

SIZE = NETS["resnet"][1]


@pytest.mark.parametrize(("kind", "backend"), [("xml", "openvino"), ("onnx", "onnxruntime")])
def test_waiting_requests_share_an_inference_and_get_their_own_rows(
    patched: dict[str, Path], kind: str, backend: str
) -> None:
    session = open_session(patched[kind], backend)
    rng = np.random.default_rng(0)
    tensors = [rng.random((n, 3, SIZE, SIZE), dtype=np.float32) for n in (1, 2, 1, 3, 5)]

    async def main() -> list[tuple[dict[str, np.ndarray], float]]:
        batcher = Batcher(session, max_batch_size=4)
        try:
            return await asyncio.gather(*(batcher.run(t) for t in tensors))
        finally:
            assert batcher.served.requests == len(tensors) + 1  # the 5-image request ran as 4 + 1
            # the first ran alone at once; those that waited behind it went together
            assert batcher.served.inferences < batcher.served.requests
            batcher.close()

    results = asyncio.run(main())
    for tensor, (outputs, seconds) in zip(tensors, results, strict=True):
        alone = run(patched[kind], tensor, backend)
        assert seconds > 0
        for name in alone:
            np.testing.assert_allclose(outputs[name], alone[name], atol=1e-5)


def test_an_engine_failure_fails_its_batch_only(patched: dict[str, Path]) -> None:
    session = open_session(patched["onnx"], "onnxruntime")
    real = session.infer
    calls: list[int] = []

    def flaky(x: np.ndarray) -> dict[str, np.ndarray]:
        calls.append(len(x))
        if len(calls) == 1:
            raise RuntimeError("device lost")
        return real(x)

    session.infer = flaky  # type: ignore[method-assign]
    x = np.zeros((1, 3, SIZE, SIZE), np.float32)

    async def main() -> tuple[BaseException | None, int]:
        batcher = Batcher(session, max_batch_size=4)
        first = await asyncio.gather(batcher.run(x), return_exceptions=True)
        outputs, _ = await batcher.run(x)
        batcher.close()
        error = first[0] if isinstance(first[0], BaseException) else None
        return error, len(outputs["logits"])

    error, rows = asyncio.run(main())
    assert error is not None and "inference failed: device lost" in str(error) and rows == 1
