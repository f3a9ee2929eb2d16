"""``db.frames.read_frame`` reads a query in pieces and gives the frame ``pd.DataFrame(rows)`` would,
on SQLite and PostgreSQL, without leaving the connection streaming."""

from __future__ import annotations

import pandas as pd
import pytest
from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table, insert, select

from db.frames import read_frame

ROWS = [
    {"id": 1, "n": 4, "word": "yes", "at": None},
    {"id": 2, "n": None, "word": "no", "at": None},
    {"id": 3, "n": None, "word": None, "at": pd.Timestamp("2026-01-02 03:04:05").to_pydatetime()},
    {"id": 4, "n": 7, "word": "yes", "at": None},
    {"id": 5, "n": None, "word": "yes", "at": None},
]


@pytest.fixture
def table(engine):
    meta = MetaData()
    t = Table(
        "frames_probe",
        meta,
        Column("id", Integer, primary_key=True),
        Column("n", Integer),
        Column("word", String(10)),
        Column("at", DateTime),
    )
    meta.create_all(engine)
    with engine.begin() as c:
        c.execute(insert(t), ROWS)
    yield t
    meta.drop_all(engine)


@pytest.mark.parametrize("chunk", [1, 2, 3, 100])
def test_pieces_give_the_whole_frame(engine, table, chunk):
    cols = ["id", "n", "word", "at"]
    q = select(table).order_by(table.c.id)
    with engine.connect() as c:
        whole = pd.DataFrame(c.execute(q).all(), columns=cols)
        read = read_frame(c, q, cols, shared=["word"], chunk=chunk)
        # the connection is not left in streaming mode: a write on it still works
        c.execute(insert(table), [{"id": 9, "n": 1, "word": "x", "at": None}])
        c.rollback()
    pd.testing.assert_frame_equal(read, whole)
    assert read["word"].isna().sum() == 1


def test_repeated_texts_are_one_object(engine, table):
    """With object columns (pandas before 3), each distinct text is stored once."""
    from db.frames import _deduplicated

    col = pd.Series(["yes", None, "".join(["ye", "s"]), "no"], dtype=object)
    assert col[0] is not col[2]
    out = _deduplicated(col)
    assert out.tolist() == ["yes", None, "yes", "no"]
    assert out[0] is out[2] and out[1] is None


def test_empty_result(engine, table):
    q = select(table).where(table.c.id < 0)
    with engine.connect() as c:
        out = read_frame(c, q, ["id", "n", "word", "at"], shared=["word"])
    assert list(out.columns) == ["id", "n", "word", "at"] and out.empty
