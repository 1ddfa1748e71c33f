"""Persistence: workflows and their versions, sources, runs, steps and schedules.

SQLite in embedded mode, PostgreSQL in distributed mode, one set of alembic migrations.
"""
