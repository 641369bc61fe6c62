"""Metadata: SQLModel tables, sessions and Alembic migrations."""
