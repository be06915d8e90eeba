"""The store: the single source of truth (SQLite or PostgreSQL through SQLAlchemy Core)."""
