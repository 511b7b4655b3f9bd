"""ONNX Runtime: short passes of encoder models without PyTorch's per-operator overhead.

ONNX Runtime 1.23 and later carry Microsoft's 1DS telemetry on Linux: with it on, a session
writes a device id and an event store under ~/.cache/Microsoft/DeveloperTools and a session
file in the temp dir. Its own switch turns that off, set here before onnxruntime is imported
by anything in this package (tests/test_small_passes.py checks nothing is written).
"""

import os

os.environ["ORT_DISABLE_TELEMETRY"] = "1"
