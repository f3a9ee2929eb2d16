"""Filtering and drill-down for interactive use (the dashboard page calls these; no streamlit here).

Example::

    sub = filter_study(data, scenarios=["travel_planning"], waves=["human_v2", "agent"])
    ids = drilldown_ids(analysis_frame(sub), "politeness", user_kind="agent", scenario="all", value="Polite")
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import pandas as pd

from analysis.dataset import StudyData

FILTERS = {
    "scenarios": "scenario",
    "assistant_models": "assistant_model",
    "simulators": "simulator",
    "waves": "wave",
}


def filter_options(data: StudyData) -> dict[str, list[str]]:
    """The values each filter can take in this study."""
    c = data.conversations
    return {name: sorted(c[col].dropna().astype(str).unique().tolist()) for name, col in FILTERS.items()}


def filter_study(
    data: StudyData,
    scenarios: Sequence[str] | None = None,
    assistant_models: Sequence[str] | None = None,
    simulators: Sequence[str] | None = None,
    waves: Sequence[str] | None = None,
) -> StudyData:
    """A copy of the study restricted to the chosen values (None or empty = no restriction).
    The simulator filter applies to agent conversations only (humans have none)."""
    c = data.conversations
    keep = pd.Series(True, index=c.index)
    for values, col in ((scenarios, "scenario"), (assistant_models, "assistant_model"), (waves, "wave")):
        if values:
            keep &= c[col].astype(str).isin(list(values))
    if simulators:
        keep &= (c["user_kind"] != "agent") | c["simulator"].astype(str).isin(list(simulators))
    ids = set(c.loc[keep, "conversation_id"])
    return replace(
        data,
        conversations=c[keep].reset_index(drop=True),
        labels=data.labels[data.labels["conversation_id"].isin(ids)].reset_index(drop=True),
        features=data.features[data.features["conversation_id"].isin(ids)].reset_index(drop=True),
    )


def drilldown_ids(
    frame: pd.DataFrame, dimension: str, user_kind: str, scenario: str, value: str
) -> list[int]:
    """Conversations behind one bar of ``charts.label_distribution_fig`` (its customdata)."""
    d = frame[(frame["user_kind"] == user_kind) & (frame[dimension].astype(str) == str(value))]
    if scenario != "all":
        d = d[d["scenario"] == scenario]
    return d["conversation_id"].astype(int).tolist()
