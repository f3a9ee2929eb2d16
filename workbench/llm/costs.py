"""What a study has spent on model calls: by purpose, model and simulation run, from the LLMCall rows.

Every call is recorded (failed and cached ones too), so the figures are exact sums, not estimates;
a cached call costs nothing. ``costs_df`` is the table the ``workbench costs`` command and the
Simulation page show.
"""

from __future__ import annotations

import pandas as pd
from sqlalchemy import case, func
from sqlmodel import Session, select

from db.models import LLMCall

COLUMNS = [
    "purpose",
    "model",
    "run_id",
    "calls",
    "failed_calls",
    "cached_calls",
    "prompt_tokens",
    "completion_tokens",
    "cost_usd",
]


def costs_df(session: Session, study_id: int) -> pd.DataFrame:
    """One row per purpose x model x run (``run_id`` empty outside simulation runs), with a last row
    ``purpose == "total"``; costs in USD."""
    rows = session.exec(
        select(
            LLMCall.purpose,
            LLMCall.model,
            LLMCall.run_id,
            func.count(LLMCall.id),
            func.count(LLMCall.error),
            func.sum(case((LLMCall.cache_hit, 1), else_=0)),
            func.coalesce(func.sum(LLMCall.prompt_tokens), 0),
            func.coalesce(func.sum(LLMCall.completion_tokens), 0),
            func.coalesce(func.sum(LLMCall.cost_usd), 0.0),
        )
        .where(LLMCall.study_id == study_id)
        .group_by(LLMCall.purpose, LLMCall.model, LLMCall.run_id)
        .order_by(LLMCall.purpose, LLMCall.model, LLMCall.run_id)
    ).all()
    df = pd.DataFrame([tuple(r) for r in rows], columns=COLUMNS)
    df["run_id"] = df["run_id"].astype("Int64")
    for col in COLUMNS[3:8]:
        df[col] = df[col].astype(int)
    df["cost_usd"] = df["cost_usd"].astype(float)
    total = {c: df[c].sum() for c in COLUMNS[3:]}
    return pd.concat([df, pd.DataFrame([{"purpose": "total", "model": "", **total}])], ignore_index=True)
