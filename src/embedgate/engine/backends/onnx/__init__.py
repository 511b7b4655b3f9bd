"""ONNX Runtime: short passes of encoder models without PyTorch's per-operator overhead."""
