"""Signals after engines come and go (``ovxai.interrupts.keep_signal_stack``): Ctrl-C and SIGTERM still reach
their handlers once OpenVINO Cores have been released in any order. Run in a child process: without the
guard the signal kills the process with SIGSEGV, which would take the test session down with it."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

CHILD = textwrap.dedent(
    """
    import gc, os, signal, sys
    from pathlib import Path
    import openvino as ov
    from openvino import opset13 as ops
    from ovxai.runtime.backends import OpenVinoSession

    image = ops.parameter([1, 3], ov.Type.f32, name="input")
    path = Path(sys.argv[1])
    ov.save_model(ov.Model([ops.relu(image)], [image], "tiny"), path)
    first = OpenVinoSession(path, "CPU", None)
    second = OpenVinoSession(path, "CPU", None)
    del first  # released before the Core compiled after it: the plugin's own order is last-in, first-out
    gc.collect()
    del second
    gc.collect()
    arrived = []
    signal.signal(signal.SIGTERM, lambda signum, frame: arrived.append(signum))
    os.kill(os.getpid(), signal.SIGTERM)
    print("handled", arrived)
    """
)


def test_a_signal_after_sessions_are_released_out_of_order_reaches_its_handler(tmp_path: Path) -> None:
    pytest.importorskip("openvino")
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path / "tiny.xml")], capture_output=True, text=True, timeout=120
    )
    assert child.returncode == 0 and "handled [15]" in child.stdout, (child.returncode, child.stderr[-2000:])
