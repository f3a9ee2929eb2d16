"""Where the data lives: the data folder and the database URL, read from the environment.

Every setting has an embedded default so the workbench runs with no configuration at all: an SQLite
file under the data folder.
"""

from __future__ import annotations

import os
from pathlib import Path

from db.errors import UserInputError

ENV_DATA_DIR = "WORKBENCH_DATA_DIR"
ENV_DB_URL = "WORKBENCH_DB_URL"
DEFAULT_DATA_DIR = Path("data")


def data_dir() -> Path:
    """The directory holding the default SQLite database, caches and run outputs."""
    path = Path(os.environ.get(ENV_DATA_DIR) or DEFAULT_DATA_DIR)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserInputError(
            f"cannot create the data directory {path} ({exc.strerror or exc}): set "
            f"{ENV_DATA_DIR} to a directory you can write to"
        ) from None
    return path


def db_url() -> str:
    """`WORKBENCH_DB_URL` if set, else `sqlite:///<data dir>/workbench.db`."""
    url = os.environ.get(ENV_DB_URL)
    if url:
        return url
    return f"sqlite:///{(data_dir() / 'workbench.db').resolve()}"
