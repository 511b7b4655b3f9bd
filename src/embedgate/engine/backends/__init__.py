"""The runtimes behind `engine.backend.Backend`, one package each.

- `torch/`: a Hugging Face model directory run by PyTorch, in a model process (the CPU
  default) or on this process's threads (GPU, one-shot CLI).
- `gguf/`: a GGUF file run by llama.cpp.
- `gateway/`: no local model; forward passes go to upstream embedding servers.

They share the tokenizer side (`hf_tokenizer.py`, `tokenizer_files.py`) and never import each
other; the engine core imports none of them. Only `engine/factory.py` chooses one, so a new
runtime is a new package here and one branch there (import-linter holds both rules).
"""
