"""Alembic's environment for the store: run the migrations on the connection that
`coordinator.migrate` hands over (in `config.attributes["connection"]`), inside its
transaction. There is no alembic.ini and no offline (SQL script) mode."""

from __future__ import annotations

from alembic import context

from coordinator.db import Base

connection = context.config.attributes.get("connection")
if connection is None or context.is_offline_mode():
    raise RuntimeError("the store's migrations run when the coordinator opens its store "
                       "(coordinator.migrate.upgrade_store), not from the alembic command")
context.configure(connection=connection, target_metadata=Base.metadata,
                  render_as_batch=True)  # SQLite alters tables by copying them
with context.begin_transaction():
    context.run_migrations()
