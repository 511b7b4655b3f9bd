"""The storage layer's part of the server's settings."""

from __future__ import annotations

from sqlalchemy import Engine

from embedgate.config import Settings
from embedgate.storage.database import database_url, open_database


def open_configured_database(settings: Settings) -> Engine:
    """PostgreSQL at `database_url`, or SQLite in the data dir; migrated to this version."""
    configured = settings.database_url.get_secret_value() if settings.database_url else None
    return open_database(database_url(configured, settings.data_dir))
