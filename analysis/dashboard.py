"""The researcher dashboard's core: what the page shows, with the readable names the report uses.

The page reads its widgets, calls one of these and renders what comes back: the label sources and
data version of a study (one session), and the fidelity section (``fidelity_view``: the ranking of
simulators, every measure beside the human ceiling and as a share of it, the chart the report shows,
and any further table the fidelity analysis provides, e.g. the three-way indistinguishability table
or the participants' instruments).

Example::

    names = Names.of(codebook)
    view = fidelity_view(engine, data, names)
    view.ranking        # Rank, Simulator, Fidelity score, Fingerprint, ... (readable headers)
    view.extra          # {"Indistinguishability (three ways)": DataFrame, ...} when provided
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
from sqlmodel import Session

from analysis import charts
from analysis.fidelity import RANKING_FAMILIES
from analysis.findings import Names
from analysis.report import _readable as readable_table

# The fidelity measures by plain name (``analysis.fidelity`` metric ids; fingerprint features are
# named by their description, see ``metric_title``).
METRIC_TITLES = {
    "usi_d1": "Fingerprint D1: style",
    "usi_d2": "Fingerprint D2: disclosure",
    "usi_d3": "Fingerprint D3: clarification",
    "usi_d4": "Fingerprint D4: reaction to errors",
    "usi_d": "Fingerprint (mean of D1-D4)",
    "mattr_z": "Lexical diversity: MATTR (z)",
    "yules_k_z": "Lexical diversity: Yule's K (z)",
    "hdd_z": "Lexical diversity: HD-D (z)",
    "coverage": "Coverage (Chamfer)",
    "frechet": "Frechet distance",
    "classifier_auc": "Classifier AUC",
    "judge_pi": "Judge: simulator win rate",
    "judge_pi_calibrated": "Judge: calibrated",
    "survey_mae": "Survey answers: mean absolute error",
    "rank_spearman": "Assistant ranking: Spearman",
    "rank_kendall": "Assistant ranking: Kendall",
    "twin_weighted_kappa": "Twins' per-reply satisfaction: weighted kappa",
    "twin_ordinal_alpha": "Twins' per-reply satisfaction: ordinal alpha",
}
FIDELITY_HEADERS = {
    "metric": "Measure",
    "group": "Group",
    "value": "Value",
    "human_ceiling": "Human ceiling",
    "calibrated": "Share of ceiling",
    "human_mean": "People (mean)",
    "agent_mean": "Simulated (mean)",
    "fidelity_score": "Fidelity score",
    "fingerprint": "Fingerprint",
    "lexical": "Lexical",
    "distribution": "Distribution",
    "discriminator": "Discriminator",
    "judge": "Judge",
    "survey": "Survey",
    "rank_agreement": "Assistant ranking",
    "labels": "Labels",
    "n_families": "Families",
}
# The ranking's family columns: shares of the human ceiling, shown as percentages.
SHARE_COLUMNS = ("calibrated", "fidelity_score", *RANKING_FAMILIES, "labels")
METRIC_COLUMNS = [
    "simulator",
    "metric",
    "group",
    "value",
    "ci_low",
    "ci_high",
    "human_ceiling",
    "calibrated",
    "note",
]
# Titles of further tables the fidelity analysis may return beside "records" and "ranking".
EXTRA_TITLES = {
    "indistinguishability": "Indistinguishability three ways (annotators, judge, discriminator)",
    "instruments": "The participants' instruments: people vs simulated users",
}
FIDELITY_TITLE = "Fidelity against the human ceiling"


def metric_title(metric: str, names: Names) -> str:
    """``usi_d1`` -> "Fingerprint D1: style"; ``feature:words_per_turn`` -> its readable name."""
    if metric.startswith("feature:"):
        return names.title(metric.split(":", 1)[1])
    return METRIC_TITLES.get(metric, metric.replace("_", " "))


def study_header(session: Session, study_name: str) -> tuple[int, dict[str, int], tuple]:
    """(study id, label source -> labels in the study (only those with labels), data version for
    caches), in one session."""
    from db.repo import data_version, get_study, label_sources_df

    study_id = get_study(session, study_name).id
    found = label_sources_df(session, study_id)
    counts = {n: int(c) for n, c in zip(found["name"], found["n_labels"]) if c}
    return study_id, counts, data_version(session, study_id)


def _readable_fidelity(df: pd.DataFrame, names: Names) -> pd.DataFrame:
    d = df.copy()
    if "metric" in d.columns:
        d["metric"] = d["metric"].map(lambda m: metric_title(str(m), names))
    # shares of the human ceiling (1 = as close to people as people are to each other) as percentages
    for col in SHARE_COLUMNS:
        if col in d.columns:
            d[col] = d[col].map(lambda x: "" if pd.isna(x) else f"{x:.0%}")
    for col in ("value", "human_ceiling"):
        if col in d.columns:
            d[col] = d[col].map(lambda x: "" if pd.isna(x) else f"{x:.3g}")
    d = d.rename(columns={k: v for k, v in FIDELITY_HEADERS.items() if k in d.columns})
    return readable_table(d, names)


@dataclass
class FidelityView:
    """The dashboard's fidelity section: readable tables (``records`` keeps the tidy rows)."""

    records: pd.DataFrame
    ranking: pd.DataFrame | None = None
    metrics: pd.DataFrame | None = None
    features: pd.DataFrame | None = None
    figure: object = None
    extra: dict[str, pd.DataFrame] = field(default_factory=dict)  # title -> readable table
    notes: list[str] = field(default_factory=list)  # what could not be computed, in one line each


def fidelity_view(engine, data, names: Names, tables: dict | None = None, **kw) -> FidelityView:
    """The fidelity section of a loaded study (``analysis.dataset.StudyData``): ``tables`` as
    ``analysis.fidelity.study_fidelity`` returns them (computed here when None; ``kw`` go to it)."""
    if tables is None:
        from analysis.fidelity import study_fidelity

        tables = study_fidelity(engine, data, **kw)
    records = tables.get("records")
    if records is None:
        records = pd.DataFrame(columns=METRIC_COLUMNS)
    shown_metrics = records["metric"].unique() if len(records) else []
    titles = {m: metric_title(str(m), names) for m in shown_metrics}
    view = FidelityView(records=records, figure=charts.fidelity_fig(records, titles))
    for key, df in tables.items():
        if key not in ("records", "ranking") and isinstance(df, pd.DataFrame) and len(df):
            view.extra[EXTRA_TITLES.get(key, key.replace("_", " ").capitalize())] = readable_table(df, names)
    if records.empty:
        view.notes.append(
            "No fidelity measure: the study needs conversations of people and of simulated users."
        )
        return view
    notes = records[records["calibrated"].isna() & records["note"].fillna("").astype(bool)]
    view.notes += sorted({f"{metric_title(m, names)}: {n}" for m, n in zip(notes["metric"], notes["note"])})
    ranking = tables.get("ranking")
    if ranking is not None and len(ranking):
        view.ranking = _readable_fidelity(ranking, names)
    is_feature = records["metric"].str.startswith("feature:")
    shown = records[[c for c in METRIC_COLUMNS if c in records.columns]]
    view.metrics = _readable_fidelity(shown[~is_feature], names)
    view.features = _readable_fidelity(shown[is_feature], names)
    return view
