from alembic import context
from sqlmodel import SQLModel

import db.models  # noqa: F401  (registers every table)
from db.engine import make_engine
from db.settings import Settings

target_metadata = SQLModel.metadata
config = context.config


def run() -> None:
    engine = config.attributes.get("engine") or make_engine(
        config.get_main_option("sqlalchemy.url") or Settings.from_env().db_url
    )
    with engine.begin() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        context.run_migrations()


run()
