"""The composition root: settings in, opened services out (`Services`, `open_services`).

Each layer below takes only its own configuration; the translation from the server's
`Settings` to those records lives here (`engine.py`, `security.py`, `knowledge.py`), and
`model.py` supervises the served model's life.
"""

from __future__ import annotations

from embedgate.services.assembly import (
    ModelStart,
    Overrides,
    Services,
    open_services,
    open_services_sync,
)
from embedgate.services.engine import engine_config
from embedgate.services.model import EngineFactory, ModelSupervisor

__all__ = [
    "EngineFactory",
    "ModelStart",
    "ModelSupervisor",
    "Overrides",
    "Services",
    "engine_config",
    "open_services",
    "open_services_sync",
]
