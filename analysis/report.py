"""Run the analysis of a study and write its outputs: the comparison table (CSV, JSON, LaTeX),
human-likeness tables, and one self-contained offline HTML report with provenance.

Example::

    result = analyze(engine, "recllmsim")                 # frames in memory
    write_analysis(result, Path("out"))                   # comparisons.csv / .json, likeness CSVs
    write_report(result, engine, Path("report.html"))     # + report.csv / report.tex beside it
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import charts
from analysis.compare import COLUMNS, analysis_frame, comparison_records, comparisons_df
from analysis.dataset import StudyData, excluded_note, load_study
from analysis.fidelity import label_index_of, study_fidelity, write_fidelity
from analysis.findings import (
    EFFECT_NAMES,
    SLICE_NAMES,
    TEST_NAMES,
    Names,
    findings_df,
    label_coverage,
    not_computed,
    p_text,
)
from analysis.instruments import merge_fidelity, study_instruments
from analysis.likeness import likeness_tables
from analysis.trajectory import TRAJECTORY_COLUMNS, stored_turn_features_df, turn_trajectory_df

TEMPLATE = Path(__file__).parent / "templates" / "report.html.j2"
REPORT_SECTIONS = [
    "findings",
    "summary",
    "comparisons",
    "distributions",
    "effects",
    "features",
    "trajectory",
    "likeness",
    "fidelity",
    "instruments",
    "agreement",
    "provenance",
]


@dataclass
class AnalysisResult:
    data: StudyData
    comparisons: pd.DataFrame
    likeness: dict[str, pd.DataFrame]
    agreement: pd.DataFrame | None
    agreement_note: str
    correction: str
    timings: dict = field(default_factory=dict)
    # population x user-turn position x per-turn feature (``analysis.trajectory``)
    turn_trajectory: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=TRAJECTORY_COLUMNS))
    codebook: object = None  # the codebook analysed with (its titles and group order name things)
    fidelity: dict[str, pd.DataFrame] = field(default_factory=dict)  # analysis.fidelity.study_fidelity
    # analysis.instruments.study_instruments: the participants' per-reply answers and questionnaires
    instruments: dict = field(default_factory=dict)


def agreement_df(
    engine, data: StudyData, n_boot: int = 500, codebook=None
) -> tuple[pd.DataFrame | None, str]:
    """Agreement of every pair of conversation-level label sources that label common conversations
    (``annotation.agreement``, loaded lazily: the report says "not available" without it).
    ``codebook``: the scales of the dimensions (default: the bundled codebook)."""
    try:
        from annotation.agreement import study_agreement_df
    except Exception as exc:  # another area's module; the report still renders
        return None, f"not available (annotation.agreement could not be imported: {exc.__class__.__name__})"
    from sqlmodel import Session

    from analysis.dataset import CONSENSUS

    # stored sources only: the annotators' consensus is derived from them, not a source of its own
    names = [s["name"] for s in data.meta.get("label_sources", []) if s["name"] != CONSENSUS]
    frames, failed = [], []
    with Session(engine) as session:
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                try:
                    df = study_agreement_df(session, data.study_name, a, b, n_boot=n_boot, codebook=codebook)
                except Exception as exc:  # noqa: BLE001 - one failing pair must not sink the report
                    failed.append(f"{a} vs {b}: {exc}")
                    continue
                if len(df) and df["n"].fillna(0).max() > 0:
                    frames.append(df)
    note = f"not computed for {'; '.join(failed)}" if failed else ""
    if not frames:
        return None, "not available (" + (note or "fewer than two label sources share conversations") + ")"
    return pd.concat(frames, ignore_index=True), note


def analyze(
    engine,
    study: str,
    labels: str | None = None,
    correction: str = "holm",
    n_boot: int = 1000,
    pipelines: dict | None = None,
    agreement: bool = True,
    progress: Callable[[str], None] | None = None,
    codebook=None,
) -> AnalysisResult:
    """Load the study (features from the store), compare, measure human-likeness and agreement.
    ``codebook``: the dimensions' scales (default: the bundled codebook; the CLI passes its own)."""
    import time

    say = progress or (lambda _msg: None)
    timings = {}
    t = time.perf_counter()
    say("loading conversations, labels and features")
    data = load_study(engine, study, labels=labels, pipelines=pipelines, codebook=codebook)
    timings["load_and_features_s"] = time.perf_counter() - t
    t = time.perf_counter()
    say("comparing human and agent conversations")
    comp = comparisons_df(data, correction=correction, n_boot=n_boot)
    timings["comparisons_s"] = time.perf_counter() - t
    t = time.perf_counter()
    say("measuring human-likeness")
    like = likeness_tables(data, n_boot=n_boot)
    timings["likeness_s"] = time.perf_counter() - t
    t = time.perf_counter()
    if agreement:
        say("agreement between label sources")
    agr, note = (
        agreement_df(engine, data, n_boot=min(n_boot, 500), codebook=codebook)
        if agreement
        else (None, "not requested")
    )
    timings["agreement_s"] = time.perf_counter() - t
    t = time.perf_counter()
    say("per-turn trajectories")
    turns = stored_turn_features_df(engine, data.conversations["conversation_id"], data.feature_version)
    traj = turn_trajectory_df(turns, data.conversations)
    timings["trajectory_s"] = time.perf_counter() - t
    t = time.perf_counter()
    say("fidelity metrics and their human ceilings")
    fid = study_fidelity(engine, data, pipelines=pipelines, likeness=like)
    timings["fidelity_s"] = time.perf_counter() - t
    t = time.perf_counter()
    say("the participants' instruments (ratings, questionnaires, rank agreement)")
    inst = study_instruments(engine, data, correction=correction, n_boot=n_boot)
    if len(inst["comparisons"]):  # the instrument rows join the comparison table (their own families)
        comp = pd.concat([comp, inst["comparisons"]], ignore_index=True) if len(comp) else inst["comparisons"]
    fid = merge_fidelity(fid, inst["records"], label_index_of(like))
    timings["instruments_s"] = time.perf_counter() - t
    return AnalysisResult(data, comp, like, agr, note, correction, timings, traj, codebook, fid, inst)


def provenance(engine, result: AnalysisResult) -> dict:
    """What produced these numbers: versions, models, prompts, database counts, time (UTC)."""
    from sqlalchemy import func
    from sqlmodel import Session, select

    from db import __version__
    from db.models import Conversation, Label, LabelSource, SimulatorConfig, Turn

    data = result.data
    convs = data.conversations
    with Session(engine) as session:
        n_turns = session.exec(
            select(func.count(Turn.id))
            .join(Conversation, Conversation.id == Turn.conversation_id)
            .where(Conversation.study_id == data.study_id)
        ).one()
        n_labels = session.exec(
            select(func.count(Label.id))
            .join(Conversation, Conversation.id == Label.conversation_id)
            .where(Conversation.study_id == data.study_id)
        ).one()
        sim_ids = [int(i) for i in convs["simulator_config_id"].dropna().unique()]
        sims = (
            session.exec(select(SimulatorConfig).where(SimulatorConfig.id.in_(sim_ids))).all()
            if sim_ids
            else []
        )
        src = (
            session.exec(select(LabelSource).where(LabelSource.name == data.label_source)).first()
            if data.label_source
            else None
        )
    return _no_paths(
        {
            "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "software": f"llm-user-workbench {__version__}",
            "study": data.study_name,
            "database": _database_name(engine.url),
            "label_source": data.label_source,
            "label_source_reason": data.label_source_reason,
            "label_source_model": src.model if src else None,
            "label_prompt_version": src.prompt_version if src else None,
            "label_codebook_version": src.codebook_version if src else None,
            "codebook_version": data.codebook_version or "not available",
            "feature_version": data.feature_version,
            "analysis_language": data.language or "each conversation in its own language",
            "correction": result.correction,
            "assistant_models": sorted(convs["assistant_model"].dropna().unique().tolist()),
            "simulators": [
                {
                    "name": s.name,
                    "model": s.model,
                    "prompt_template": s.prompt_template,
                    "prompt_version": s.prompt_version,
                    "temperature": s.temperature,
                }
                for s in sims
            ],
            "counts": {
                "conversations_human": int((convs["user_kind"] == "human").sum()),
                "conversations_agent": int((convs["user_kind"] == "agent").sum()),
                "participants": int(convs["participant"].nunique()),
                "scenarios": int(convs["scenario"].nunique()),
                "turns": int(n_turns),
                "labels": int(n_labels),
            },
            "label_sources": data.meta.get("label_sources", []),
            "excluded": data.meta.get("excluded", {}),
            "excluded_note": excluded_note(data),
            "timings_s": {k: round(v, 2) for k, v in result.timings.items()},
        }
    )


def write_analysis(result: AnalysisResult, out_dir: Path) -> list[Path]:
    """comparisons.csv / .json (+ .tex), likeness tables and meta.json in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    comp = result.comparisons
    p = out_dir / "comparisons.csv"
    comp.to_csv(p, index=False)
    paths.append(p)
    p = out_dir / "comparisons.json"
    p.write_text(json.dumps(comparison_records(comp), ensure_ascii=False, indent=1), encoding="utf-8")
    paths.append(p)
    p = out_dir / "comparisons.tex"
    p.write_text(latex_table(comp), encoding="utf-8")
    paths.append(p)
    for name, df in result.likeness.items():
        p = out_dir / f"likeness_{name}.csv"
        df.to_csv(p, index=False)
        paths.append(p)
    paths += write_fidelity(result.fidelity, out_dir)
    p = out_dir / "turn_trajectory.csv"
    result.turn_trajectory.to_csv(p, index=False)
    paths.append(p)
    p = out_dir / "meta.json"
    meta = {
        "study": result.data.study_name,
        "label_source": result.data.label_source,
        "label_source_reason": result.data.label_source_reason,
        "correction": result.correction,
        "feature_version": result.data.feature_version,
        "codebook_version": result.data.codebook_version,
        "analysis_language": result.data.language,
        "n_rows": len(comp),
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    p.write_text(json.dumps(meta, indent=1), encoding="utf-8")
    paths.append(p)
    return paths


def latex_table(comp: pd.DataFrame, slice_by: str = "pooled") -> str:
    """The comparison table's fixed columns as a LaTeX tabular (booktabs)."""
    d = comp[comp["slice_by"] == slice_by][COLUMNS] if len(comp) else comp[COLUMNS]
    p_cols = _p_columns(d)
    d = d.rename(columns=lambda c: c.replace("_", " "))
    return d.to_latex(
        index=False,
        float_format=lambda x: f"{x:.3g}",
        na_rep="--",
        escape=True,
        formatters={c.replace("_", " "): format_p for c in p_cols},
    )


def format_p(x) -> str:
    """A p-value for reading: 3 significant digits, and "<1e-300" where it underflowed to 0 (a
    printed 0 would claim certainty no test gives)."""
    if x is None or x != x:
        return ""
    return "<1e-300" if x == 0 else f"{x:.3g}"


def _p_columns(d: pd.DataFrame) -> list:
    return [c for c in d.columns if str(c).startswith("p_")]  # p_value, p_adjusted


def _table_html(df: pd.DataFrame | None, columns: list | None = None, max_rows: int = 2000) -> str:
    if df is None or df.empty:
        return "<p class='na'>no rows</p>"
    d = (df[columns] if columns else df).head(max_rows).infer_objects()
    d = d.mask(d.isna(), np.nan)  # None in an object column would print as "None"; na_rep applies to NaN
    return d.to_html(
        index=False,
        classes="tbl",
        na_rep="",
        float_format=lambda x: f"{x:.4g}",
        escape=True,
        border=0,
        formatters={c: format_p for c in _p_columns(d)},
    )


# Column headers a reader understands, for the tables shown (CSV downloads keep the tidy names).
HEADERS = {
    "dimension": "Dimension",
    "scenario": "Scenario",
    "slice": "Slice",
    "test": "Test",
    "statistic": "Statistic",
    "p_value": "p",
    "p_adjusted": "p (adjusted)",
    "effect_size_name": "Effect size",
    "effect_size": "Value",
    "ci": "95% CI",
    "n_human": "n people",
    "n_agent": "n simulated",
    "human_summary": "People",
    "agent_summary": "Simulated",
    "note": "Note",
    "rank": "Rank",
    "simulator": "Simulator",
    "population": "Population",
    "human_likeness_index": "Human-likeness index",
    "human_likeness_index_raw": "Index (raw)",
    "classifier_auc": "Classifier AUC",
    "auc_ci": "AUC 95% CI",
    "early_stop_rate": "Early stop",
    "positive_feedback_rate": "Positive feedback",
    "over_cooperation": "Over-cooperation",
    "persona_contradiction_rate": "Persona contradiction",
    "js_distance": "JS distance",
    "js_null": "JS with no difference",
    "user_kind": "Conversations of",
    "source_a": "Source A",
    "source_b": "Source B",
    "krippendorff_alpha": "Krippendorff's alpha",
    "cohen_kappa": "Cohen's kappa",
    "weighted_kappa": "Weighted kappa",
    "agreement": "Raw agreement",
}
USER_KINDS = {"human": "people", "agent": "simulated users", "all": "both"}
RATE_COLUMNS = ("early_stop_rate", "positive_feedback_rate", "over_cooperation", "persona_contradiction_rate")


def _ci(lo, hi) -> str:
    return "" if pd.isna(lo) or pd.isna(hi) else f"[{lo:.2f}, {hi:.2f}]"


def _compact_summary(text, dimension: str, names: Names) -> str:
    """A group's summary in a few words: the most frequent label with its share, or the mean."""
    if not isinstance(text, str) or not text:
        return ""
    if text.startswith("{"):
        shares = json.loads(text)
        if not shares:
            return ""
        top = max(shares, key=shares.get)
        return f"{names.label(dimension, top)} {shares[top]:.0%}"
    return text.replace("mean=", "mean ").replace("median=", "median ").replace(";", ",")


def _readable(df: pd.DataFrame, names: Names) -> pd.DataFrame:
    """Dimension ids as titles (in codebook order), tests and effect sizes by name, intervals in one
    column, headers in words."""
    d = df.copy()
    if "dimension" in d.columns:
        pos = {n: i for i, n in enumerate(names.sort(d["dimension"].unique()))}
        d = d.iloc[np.argsort(d["dimension"].map(pos).to_numpy(), kind="stable")]
        if "human_summary" in d.columns:
            for col in ("human_summary", "agent_summary"):
                d[col] = [_compact_summary(t, dim, names) for t, dim in zip(d[col], d["dimension"])]
        d["dimension"] = d["dimension"].map(names.title)
    if "test" in d.columns:
        d["test"] = d["test"].map(lambda t: TEST_NAMES.get(t, t))
    if "effect_size_name" in d.columns:
        d["effect_size_name"] = d["effect_size_name"].map(lambda t: EFFECT_NAMES.get(t, t))
    if {"ci_low", "ci_high"} <= set(d.columns):
        at = list(d.columns).index("ci_low")
        d.insert(at, "ci", [_ci(lo, hi) for lo, hi in zip(d["ci_low"], d["ci_high"])])
        d = d.drop(columns=["ci_low", "ci_high"])
    if {"auc_ci_low", "auc_ci_high"} <= set(d.columns):
        d["auc_ci"] = [_ci(lo, hi) for lo, hi in zip(d["auc_ci_low"], d["auc_ci_high"])]
        d = d.drop(columns=["auc_ci_low", "auc_ci_high"])
    for col in ("p_value", "p_adjusted"):
        if col in d.columns:
            d[col] = d[col].map(format_p)
    for col in ("effect_size", "statistic"):
        if col in d.columns:
            d[col] = d[col].map(lambda x: "" if pd.isna(x) else f"{x:.3g}")
    for col in RATE_COLUMNS:
        if col in d.columns:
            d[col] = d[col].map(lambda x: "" if pd.isna(x) else f"{x:.0%}")
    if "user_kind" in d.columns:
        d["user_kind"] = d["user_kind"].map(lambda k: USER_KINDS.get(k, k))
    if "scenario" in d.columns:
        d["scenario"] = d["scenario"].astype(str).str.replace("_", " ")
    return d.rename(columns=lambda c: HEADERS.get(c, str(c).replace("_", " ")))


def _with_footnotes(d: pd.DataFrame, col: str = "Note", prefix: str = "n") -> tuple[pd.DataFrame, list]:
    """Long notes out of the table: the column keeps a marker ("1", "2"...) linking to a numbered
    list below it, each distinct note listed once."""
    if col not in d.columns:
        return d, []
    notes: dict[str, int] = {}
    marks = []
    for text in d[col]:
        if not isinstance(text, str) or not text.strip():
            marks.append("")
            continue
        k = notes.setdefault(text, len(notes) + 1)
        marks.append(f"FOOTNOTE{prefix}-{k}")
    return d.assign(**{col: marks}), [(f"{prefix}-{k}", k, text) for text, k in notes.items()]


NUMBER_TEXT = ("95% CI", "AUC 95% CI", "p", "p (adjusted)", "Value", "Statistic")


def _column_style(key: str, d: pd.DataFrame) -> str:
    """Numbers right-aligned, numbers and short names on one line, other text left-aligned and
    wrapping, so a table fits the page."""
    right = [
        i + 1 for i, c in enumerate(d.columns) if pd.api.types.is_numeric_dtype(d[c]) or c in NUMBER_TEXT
    ]
    one_line = [i + 1 for i, c in enumerate(d.columns) if c in ("Effect size", "Test")]
    rules = []
    if right:
        rules.append(
            ",".join(f"#t-{key} td:nth-child({i})" for i in right) + "{text-align:right;white-space:nowrap}"
        )
    if one_line:
        rules.append(",".join(f"#t-{key} td:nth-child({i})" for i in one_line) + "{white-space:nowrap}")
    return f"<style>{''.join(rules)}</style>" if rules else ""


def _data_href(text: str, mime: str) -> str:
    return f"data:{mime};charset=utf-8;base64," + base64.b64encode(text.encode("utf-8")).decode("ascii")


def _table_block(key: str, shown: pd.DataFrame, raw: pd.DataFrame | None = None) -> dict:
    """A table for the report: its HTML (long notes as footnotes), a CSV download (the tidy columns
    of ``raw``) and a LaTeX download (the readable columns)."""
    raw = shown if raw is None else raw
    if shown is None or shown.empty:
        return {"key": key, "html": "<p class='na'>no rows</p>", "notes": [], "csv": "", "tex": ""}
    table, notes = _with_footnotes(shown, prefix=key)
    html_text = _column_style(key, table) + _table_html(table).replace(
        'class="dataframe tbl"', f'class="tbl" id="t-{key}"', 1
    )
    html_text = re.sub(
        r"FOOTNOTE([\w-]+)-(\d+)", lambda m: f"<a class='fn' href='#fn-{m[1]}-{m[2]}'>[{m[2]}]</a>", html_text
    )
    tex = shown.to_latex(index=False, na_rep="--", escape=True, float_format=lambda x: f"{x:.3g}")
    return {
        "key": key,
        "html": html_text,
        "notes": notes,
        "csv": _data_href(raw.to_csv(index=False), "text/csv"),
        "tex": _data_href(tex, "application/x-tex"),
    }


def _figure_html(i: int, key: str, fig) -> dict:
    """A figure with plotly.js embedded once (first figure), its modebar saving SVG, and links that
    download it as SVG or PNG (2x) for a paper."""
    div = f"fig-{i}"
    height = int(fig.layout.height or 400)
    config = {
        "displaylogo": False,
        "toImageButtonOptions": {"format": "svg", "filename": key, "height": height, "width": 1000},
    }
    body = fig.to_html(full_html=False, include_plotlyjs=(i == 0), config=config, div_id=div)
    return {"html": body, "div": div, "file": key, "height": height}


def _report_figures(result: AnalysisResult, names: Names) -> dict[str, list[dict]]:
    data, comp = result.data, result.comparisons
    frame = analysis_frame(data)
    titles, order = {d: names.title(d) for d in data.dimensions}, names.order
    figs: list[tuple[str, str, object]] = []
    for dim in names.sort(data.dimensions):
        cats = data.scales.get(dim, ("", []))[1]
        fig = charts.label_distribution_fig(
            frame, dim, cats, title=names.title(dim), value_titles=names.labels.get(dim, {})
        )
        figs.append(("distributions", f"distribution-{dim}", fig))
    figs.append(("effects", "effects-pooled", charts.forest_fig(comp, "pooled", "label", titles, order)))
    figs.append(("effects", "effects-scenario", charts.forest_fig(comp, "scenario", "label", titles, order)))
    feat_titles = {f: names.title(f) for f in comp["dimension"].unique()} if len(comp) else {}
    figs.append(("effects", "effects-features", charts.forest_fig(comp, "pooled", "feature", feat_titles)))
    for feat in ("user_words_per_turn", "n_user_turns"):
        figs.append(("features", f"feature-{feat}", charts.turn_length_fig(frame, feat, names.title(feat))))
    traj = result.turn_trajectory
    if traj is not None and not traj.empty:
        figs.append(("trajectory", "trajectory-words", charts.trajectory_fig(traj, "words")))
    figs.append(
        ("likeness", "likeness-distances", charts.likeness_fig(result.likeness["distances"], titles, order))
    )
    figs.append(("fidelity", "fidelity", charts.fidelity_fig(result.fidelity.get("records"))))
    by_position = (result.instruments or {}).get("by_position")
    figs.append(("instruments", "instruments-satisfaction", charts.satisfaction_position_fig(by_position)))
    figs.append(
        ("agreement", "agreement", charts.agreement_heatmap_fig(result.agreement, titles=titles, order=order))
    )
    rendered: dict[str, list[dict]] = {}
    for i, (section, key, fig) in enumerate(figs):
        rendered.setdefault(section, []).append(_figure_html(i, key, fig))
    return rendered


def _report_tables(result: AnalysisResult, names: Names) -> dict[str, dict]:
    comp = result.comparisons
    pooled = comp[(comp["slice_by"] == "pooled") & (comp["kind"] == "label")] if len(comp) else comp
    shown_cols = COLUMNS + ["slice_by", "slice", "human_summary", "agent_summary", "note"]
    full = comp[shown_cols] if len(comp) else pd.DataFrame(columns=shown_cols)
    full = full.assign(
        slice=[
            "all" if b == "pooled" else f"{SLICE_NAMES.get(b, b)}: {str(v).replace('_', ' ')}"
            for b, v in zip(full["slice_by"], full["slice"])
        ]
    )
    like = result.likeness
    return {
        "summary": _table_block(
            "pooled", _readable(pooled[COLUMNS + ["note"]] if len(pooled) else pooled, names), pooled
        ),
        "comparisons": _table_block(
            "comparisons", _readable(full.drop(columns=["slice_by", "scenario"]), names), comp
        ),
        "ranking": _table_block("ranking", _readable(like["ranking"], names), like["ranking"]),
        "failures": _table_block("failures", _readable(like["failures"], names), like["failures"]),
        "distances": _table_block("distances", _readable(like["distances"], names), like["distances"]),
        "agreement": _table_block(
            "agreement", _readable(_agreement_shown(result.agreement), names), result.agreement
        )
        if result.agreement is not None
        else None,
        **_fidelity_tables(result.fidelity, names),
        **_indistinguishability_tables(result.fidelity, names),
        **_instrument_tables(result, names),
    }


FIDELITY_SHOWN = ["simulator", "metric", "value", "ci_low", "ci_high", "human_ceiling", "calibrated", "note"]


def _fidelity_tables(fidelity: dict, names: Names) -> dict:
    """The fidelity ranking, the summary metrics and the fingerprint features, each beside the human
    ceiling (``analysis.fidelity``); None where the analysis computed none."""
    records, ranking = fidelity.get("records"), fidelity.get("ranking")
    if records is None or records.empty:
        return {"fidelity_ranking": None, "fidelity_metrics": None, "fidelity_features": None}
    features = records["metric"].str.startswith("feature:")
    shown = records[[c for c in FIDELITY_SHOWN if c in records.columns]]
    return {
        "fidelity_ranking": _table_block("fidelity_ranking", _readable(ranking, names), ranking)
        if ranking is not None and len(ranking)
        else None,
        "fidelity_metrics": _table_block(
            "fidelity_metrics", _readable(shown[~features], names), records[~features]
        ),
        "fidelity_features": _table_block(
            "fidelity_features", _readable(shown[features], names), records[features]
        ),
    }


def _indistinguishability_tables(fidelity: dict, names: Names) -> dict:
    """The three-way indistinguishability table (annotators' guesses, the LLM judge, the classifier;
    ``analysis.indistinguishability``) and how far the measures agree across simulators; None when
    the analysis has no such data (``workbench.judge.attach_stored_judge`` adds it)."""
    three, agr = fidelity.get("indistinguishability"), fidelity.get("indistinguishability_agreement")
    if three is None or three.empty:
        return {"indistinguishability": None, "indistinguishability_agreement": None}
    return {
        "indistinguishability": _table_block("indistinguishability", _readable(three, names), three),
        "indistinguishability_agreement": _table_block(
            "indistinguishability_agreement", _readable(agr, names), agr
        )
        if agr is not None and len(agr)
        else None,
    }


INSTRUMENT_METRICS = {
    "survey_mae": "Post-task survey error (MAE, 0 = as people answer)",
    "twin_weighted_kappa": "Twins' per-reply satisfaction: weighted kappa",
    "twin_ordinal_alpha": "Twins' per-reply satisfaction: ordinal alpha",
    "rank_spearman": "Ranking of assistants: Spearman's rho",
    "rank_kendall": "Ranking of assistants: Kendall's tau-b",
}
INSTRUMENT_SHOWN = [
    "simulator",
    "metric",
    "group",
    "value",
    "ci_low",
    "ci_high",
    "human_ceiling",
    "calibrated",
]


INSTRUMENT_TESTS = {
    "mixed_random_intercept": "Random intercept (mixed)",
    "ordinal_cluster_robust": "Ordinal logit (clustered)",
}
_LONG_NUMBER = re.compile(r"-?\d+\.\d{4,}(?:e-?\d+)?")


def _short_numbers(text) -> str:
    """Numbers in a summary at 3 significant digits ("mean 2.8000000000000003" -> "mean 2.8")."""
    return _LONG_NUMBER.sub(lambda m: f"{float(m[0]):.3g}", text) if isinstance(text, str) else text


def _instrument_group(group) -> str:
    g = str(group or "")
    if g == "survey":
        return "all items"
    if g.startswith("item:"):
        return "item " + g.removeprefix("item:").replace("_", " ")
    level, _, outcome = g.partition(":")
    level = {"assistant": "assistants", "assistant_x_scenario": "assistant x scenario cells"}.get(
        level, level
    )
    return f"{level}, by {outcome}" if outcome else level.replace("_", " ")


def _instrument_tables(result: AnalysisResult, names: Names) -> dict:
    """The participants' instruments (``analysis.instruments``): comparison rows (pooled and per
    simulator; per scenario and reply position apart), and the survey error, twin alignment and rank
    agreement records, with readable names; the study's one-line note where it lacks the data."""
    from analysis.instruments import INSTRUMENT_METRIC_NAMES, SLICE_TITLES, instrument_titles

    inst = result.instruments or {}
    comp = inst.get("comparisons")
    out = {"instruments_note": inst.get("note", ""), "instrument_rows": None, "instrument_slices": None}
    out["instrument_fidelity"] = None
    named = Names(
        titles={**names.titles, **instrument_titles(inst.get("instruments"))},
        labels=names.labels,
        scales=names.scales,
        order=names.order,
    )
    if comp is not None and len(comp):
        cols = COLUMNS + ["slice_by", "slice", "human_summary", "agent_summary", "note"]
        d = comp[cols].assign(
            slice=[
                "all"
                if b == "pooled"
                else f"{SLICE_TITLES.get(b, SLICE_NAMES.get(b, b))}: {str(v).replace('_', ' ')}"
                for b, v in zip(comp["slice_by"], comp["slice"])
            ]
        )
        # The table shows the test to cite (participant-clustered); every test is in the details and CSV.
        cited = comp["family"].str.endswith(("primary", ":recommended"))
        main = d["slice_by"].isin(["pooled", "simulator"]) & cited
        for key, part in (("instrument_rows", main), ("instrument_slices", ~main)):
            if part.any():
                shown = _readable(d[part].drop(columns=["slice_by", "scenario"]), named)
                shown["Test"] = shown["Test"].map(lambda t: INSTRUMENT_TESTS.get(t, t))
                for col in ("People", "Simulated"):
                    shown[col] = shown[col].map(_short_numbers)
                out[key] = _table_block(key, shown, comp[part])
    recs = (result.fidelity or {}).get("records")
    if recs is not None and len(recs):
        mine = recs[recs["metric"].isin(INSTRUMENT_METRIC_NAMES)]
        if len(mine):
            shown = mine[INSTRUMENT_SHOWN + ["note"]].assign(
                metric=mine["metric"].map(INSTRUMENT_METRICS), group=mine["group"].map(_instrument_group)
            )
            shown = _readable(shown, named).rename(
                columns={
                    "metric": "Measure",
                    "value": "Value",
                    "group": "Over",
                    "human ceiling": "Human ceiling",
                    "calibrated": "Share of ceiling",
                }
            )
            out["instrument_fidelity"] = _table_block("instrument_fidelity", shown, mine)
    return out


def _agreement_shown(agr: pd.DataFrame) -> pd.DataFrame:
    keep = [
        c
        for c in ("dimension", "user_kind", "source_a", "source_b", "n", "agreement", "cohen_kappa")
        + ("weighted_kappa", "krippendorff_alpha", "ci_low", "ci_high", "note")
        if c in agr.columns
    ]
    return agr[keep]


def _findings(result: AnalysisResult, names: Names) -> dict:
    """The answer first: findings, the fidelity ranking in words, what could not be computed."""
    data = result.data
    found = findings_df(result.comparisons, names)
    ranking = result.likeness["ranking"]
    ranked = []
    for r in ranking.itertuples():
        if pd.isna(r.human_likeness_index):
            continue
        auc = "" if pd.isna(r.classifier_auc) else f"; classifier AUC {r.classifier_auc:.2f}"
        auc += f" {_ci(r.auc_ci_low, r.auc_ci_high)}" if auc and pd.notna(r.auc_ci_low) else ""
        ranked.append(
            f"{r.simulator}: human-likeness index {r.human_likeness_index:.2f}{auc} (n = {r.n_agent})"
        )
    gaps = not_computed(result.comparisons, names)
    if not ranked:
        gaps.append(
            "Simulator fidelity ranking: no simulator has labelled conversations to compare with people's."
        )
    if result.agreement is None:
        gaps.append(f"Agreement between label sources: {result.agreement_note}.")
    if result.turn_trajectory is None or result.turn_trajectory.empty:
        gaps.append("Per-turn trajectories: no per-turn feature records.")
    cov = label_coverage(data.conversations, data.labels)
    return {
        "findings": found.to_dict("records"),
        "ranking": ranked,
        "gaps": gaps,
        "coverage": {k: {"labelled": a, "total": b} for k, (a, b) in cov.items()},
    }


def render_report(result: AnalysisResult, engine) -> str:
    """The report as one HTML string: plotly.js embedded once (first figure), everything offline."""
    import jinja2

    names = Names.of(result.codebook if result.codebook is not None else _default_codebook())
    comp = result.comparisons
    prov = provenance(engine, result)
    env = jinja2.Environment(autoescape=jinja2.select_autoescape(["html", "j2"]))
    template = env.from_string(TEMPLATE.read_text(encoding="utf-8"))
    return template.render(
        title=f"People vs simulated users: {result.data.study_name}",
        prov=prov,
        prov_json=json.dumps(prov, indent=1, default=str),
        figs=_report_figures(result, names),
        sections=REPORT_SECTIONS,
        tables=_report_tables(result, names),
        head=_findings(result, names),
        latex=latex_table(comp) if len(comp) else "",
        agreement_note=result.agreement_note,
        trajectory_available=result.turn_trajectory is not None and not result.turn_trajectory.empty,
        p_text=p_text,
    )


def _default_codebook():
    from annotation.codebook import load_codebook

    try:
        return load_codebook()
    except Exception:  # noqa: BLE001 - without a codebook the report shows the ids
        return None


def _database_name(url) -> str:
    """The database without a path or password: "sqlite (study.db)", "postgresql (host/db)"."""
    if url.get_backend_name() == "sqlite":
        return f"sqlite ({Path(url.database).name})" if url.database else "sqlite (in memory)"
    return f"{url.get_backend_name()} ({url.host or 'local'}/{url.database})"


_ABS_PATH = re.compile(r"(?<![\w:])(?:/[^/\s'\",;)]+)+/([^/\s'\",;)]+)")


def _no_paths(value):
    """Absolute paths shortened to their file name (the report travels; the author's folders don't)."""
    if isinstance(value, str):
        return _ABS_PATH.sub(r"\1", value)
    if isinstance(value, dict):
        return {k: _no_paths(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_no_paths(v) for v in value]
    return value


def write_report(result: AnalysisResult, engine, out: Path) -> list[Path]:
    """Write the HTML report and, beside it, the comparison table as CSV and LaTeX."""
    out.parent.mkdir(parents=True, exist_ok=True)
    text = render_report(result, engine)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(out)  # never leave a half-written report behind
    csv = out.with_suffix(".csv")
    result.comparisons.to_csv(csv, index=False)
    tex = out.with_suffix(".tex")
    tex.write_text(latex_table(result.comparisons), encoding="utf-8")
    return [out, csv, tex]
