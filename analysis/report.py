"""Run the analysis of a study and write its outputs: the comparison table (CSV, JSON, LaTeX),
human-likeness tables, and one self-contained offline HTML report with provenance.

Example::

    result = analyze(engine, "recllmsim")                 # frames in memory
    write_analysis(result, Path("out"))                   # comparisons.csv / .json, likeness CSVs
    write_report(result, engine, Path("report.html"))     # + report.csv / report.tex beside it
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import charts
from analysis.compare import COLUMNS, analysis_frame, comparison_records, comparisons_df
from analysis.dataset import StudyData, excluded_note, load_study
from analysis.fidelity import study_fidelity, write_fidelity
from analysis.likeness import likeness_tables
from analysis.trajectory import TRAJECTORY_COLUMNS, stored_turn_features_df, turn_trajectory_df

TEMPLATE = Path(__file__).parent / "templates" / "report.html.j2"
REPORT_SECTIONS = [
    "summary",
    "comparisons",
    "distributions",
    "effects",
    "features",
    "trajectory",
    "likeness",
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
    fidelity: dict[str, pd.DataFrame] = field(default_factory=dict)  # analysis.fidelity.study_fidelity


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
    return AnalysisResult(data, comp, like, agr, note, correction, timings, traj, fid)


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
    return {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "software": f"llm-user-workbench {__version__}",
        "study": data.study_name,
        "database": engine.url.render_as_string(hide_password=True),
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


def render_report(result: AnalysisResult, engine) -> str:
    """The report as one HTML string: plotly.js embedded once (first figure), everything offline."""
    import jinja2

    data = result.data
    frame = analysis_frame(data)
    comp = result.comparisons
    figs: list[tuple[str, str, object]] = []  # (section, title, figure)
    for dim in data.dimensions:
        figs.append(
            (
                "distributions",
                dim,
                charts.label_distribution_fig(frame, dim, data.scales.get(dim, ("", []))[1]),
            )
        )
    figs.append(("effects", "pooled", charts.forest_fig(comp, "pooled", "label")))
    figs.append(("effects", "per scenario", charts.forest_fig(comp, "scenario", "label")))
    figs.append(("effects", "features", charts.forest_fig(comp, "pooled", "feature")))
    figs.append(("features", "turn length", charts.turn_length_fig(frame, "user_words_per_turn")))
    figs.append(("features", "turns", charts.turn_length_fig(frame, "n_user_turns")))
    traj = result.turn_trajectory
    has_traj = traj is not None and not traj.empty
    if has_traj:
        figs.append(("trajectory", "words per turn", charts.trajectory_fig(traj, "words")))
    figs.append(("likeness", "distances", charts.likeness_fig(result.likeness["distances"])))
    figs.append(("agreement", "heatmap", charts.agreement_heatmap_fig(result.agreement)))
    rendered: dict[str, list[str]] = {}
    for i, (section, _title, fig) in enumerate(figs):
        rendered.setdefault(section, []).append(
            fig.to_html(full_html=False, include_plotlyjs=(i == 0), config={"displaylogo": False})
        )
    csv_bytes = comp.to_csv(index=False).encode("utf-8")
    prov = provenance(engine, result)
    env = jinja2.Environment(autoescape=jinja2.select_autoescape(["html", "j2"]))
    template = env.from_string(TEMPLATE.read_text(encoding="utf-8"))
    pooled = comp[(comp["slice_by"] == "pooled")] if len(comp) else comp
    return template.render(
        title=f"Human vs agent: {data.study_name}",
        prov=prov,
        prov_json=json.dumps(prov, indent=1, default=str),
        figs=rendered,
        sections=REPORT_SECTIONS,
        summary_table=_table_html(pooled[pooled["kind"] == "label"] if len(pooled) else pooled, COLUMNS),
        comparisons_table=_table_html(
            comp, COLUMNS + ["slice_by", "slice", "human_summary", "agent_summary", "note"]
        ),
        csv_href="data:text/csv;base64," + base64.b64encode(csv_bytes).decode("ascii"),
        latex=latex_table(comp) if len(comp) else "",
        ranking_table=_table_html(result.likeness["ranking"]),
        failures_table=_table_html(result.likeness["failures"]),
        distances_table=_table_html(result.likeness["distances"]),
        agreement_table=_table_html(result.agreement) if result.agreement is not None else "",
        agreement_note=result.agreement_note,
        trajectory_available=has_traj,
        escape=html.escape,
    )


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
