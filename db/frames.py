"""Query results as pandas frames, read in pieces so a large result never exists as Python rows.

A million conversations carry about eleven million labels. Building a frame from ``result.all()``
first holds every row as a tuple of fresh Python objects (about 9 GB there); this reads the result
``chunk`` rows at a time and stores each repeated text (source names, dimensions, values, statuses)
once, so the frame costs about one pointer per cell.

Example::

    with engine.connect() as conn:
        frame = read_frame(conn, query, ["conversation_id", "dimension", "value"], shared=["dimension", "value"])
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

CHUNK_ROWS = 100_000


def read_frame(conn, query, columns: Sequence[str], shared: Sequence[str] = (), chunk: int = CHUNK_ROWS):
    """The rows of ``query`` (a Core select) on connection ``conn`` as a DataFrame with ``columns``.
    Text columns named in ``shared`` keep one Python object per distinct value. Column dtypes are
    those of ``pd.DataFrame(rows, columns=columns)``, so callers see no difference."""
    # options for this statement only: Connection.execution_options() would change the connection
    result = conn.execute(query, execution_options={"stream_results": True, "yield_per": chunk})
    parts = []
    for rows in result.partitions(chunk):
        # column by column: building from Row objects costs pandas two failing attribute
        # lookups per row (about 7 us each, 10 s per million rows)
        part = pd.DataFrame(dict(zip(columns, zip(*rows))), columns=list(columns))
        for col in shared:
            part[col] = _deduplicated(part[col])
        parts.append(part)
    if not parts:
        return pd.DataFrame(columns=list(columns))
    if len(parts) == 1:
        return parts[0]
    out = pd.concat(parts, ignore_index=True)
    for col in columns:
        if len({str(p[col].dtype) for p in parts}) > 1:  # e.g. ints here, all None there
            out[col] = pd.Series(out[col].tolist(), name=col)  # inferred as for the whole
        if col in shared:  # the same text in two chunks: one object again
            out[col] = _deduplicated(out[col])
    return out


def _deduplicated(col: pd.Series) -> pd.Series:
    """``col`` with every repeated value the same object; missing values become None."""
    if col.dtype != object:
        return col
    codes, uniques = pd.factorize(col)
    values = np.empty(len(col), dtype=object)  # filled with None
    present = codes >= 0
    values[present] = np.asarray(uniques, dtype=object)[codes[present]]
    return pd.Series(values, index=col.index, name=col.name, dtype=object)
