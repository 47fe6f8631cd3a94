"""The lead store's Alembic migrations, the same on SQLite and PostgreSQL."""
