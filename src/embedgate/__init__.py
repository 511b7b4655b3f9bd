"""embedgate: a private, self-hosted text-embedding service with an OpenAI-compatible API."""

__version__ = "0.1.0"
