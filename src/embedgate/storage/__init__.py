"""Metadata storage: SQLite under the data dir by default, PostgreSQL by URL (SQLAlchemy)."""
