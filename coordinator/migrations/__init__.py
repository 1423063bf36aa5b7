"""The store's Alembic migrations: `env.py` and one file a revision in `versions/`."""
