"""Alembic environment: runs against the Database handed over by kg.db.migrate."""

from alembic import context

from kg.db.models import Base

config = context.config
database = config.attributes["database"]

with database.engine.begin() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=database.dialect == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
