"""llama.cpp over a GGUF file (the optional `gguf` extra)."""
