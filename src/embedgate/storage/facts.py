"""Facts every replica sharing a database must agree on (one row per name)."""

from __future__ import annotations

from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError

from embedgate.storage.schema import server_facts


def agree_on(database: Engine, name: str, value: str) -> str:
    """The value stored under `name`; the first caller's `value` is stored when none is
    (two replicas starting at once: one insert wins, the other reads it)."""
    with database.connect() as conn:
        row = conn.execute(select(server_facts.c.value).where(server_facts.c.name == name)).first()
    if row is not None:
        return str(row[0])
    try:
        with database.begin() as conn:
            conn.execute(server_facts.insert().values(name=name, value=value))
    except IntegrityError:  # another replica stored it first
        return agree_on(database, name, value)
    return value
