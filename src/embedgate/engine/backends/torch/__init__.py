"""PyTorch: transformers weights, oneDNN-packed on CPU, in a model process or in-process."""
