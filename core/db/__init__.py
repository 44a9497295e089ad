"""Postgres access: the pool, plain-SQL migrations, and one query module per table."""
