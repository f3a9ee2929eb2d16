"""Fidelity command: likeness (label-free fidelity metrics, each beside its human ceiling)."""

from __future__ import annotations

from pathlib import Path

import typer

from db.errors import UserInputError
from db.settings import Settings
from workbench.cli._progress import steps

_JUDGE = typer.Option(
    None, "--judge", help="LLM judge of pairwise indistinguishability, provider/model (default: no judge)."
)
_JUDGE_SAMPLES = typer.Option(3, "--judge-samples", help="Judge samples per pair (ties count 0.5).")
_JUDGE_PAIRS = typer.Option(
    100, "--judge-pairs", help="Pairs per simulator with people (and as many HH and PP anchor pairs)."
)
_DRY_RUN = typer.Option(
    False, "--dry-run", help="With --judge: print the projected calls and cost, then stop."
)
_BUDGET = typer.Option(
    None,
    "--budget",
    help="With --judge: spending cap in USD; no call starts that would pass it (rerun to go on).",
)
_CONCURRENCY = typer.Option(4, "--concurrency", help="With --judge: calls in flight at once.")


def likeness(
    study: str = typer.Option(..., "--study", help="Study name."),
    out: Path = typer.Option(..., "--out", help="Output directory (created)."),
    splits: int = typer.Option(20, "--splits", help="Random participant splits for the human ceiling."),
    n_boot: int = typer.Option(200, "--n-boot", help="Bootstrap replicates for the intervals."),
    embedding: str | None = typer.Option(
        None, "--embedding", help="tfidf_svd or sentence_transformers (default: the first available)."
    ),
    json_file: Path | None = typer.Option(None, "--json", help="Also write the records to this file."),
    judge: str | None = _JUDGE,
    judge_samples: int = _JUDGE_SAMPLES,
    judge_pairs: int = _JUDGE_PAIRS,
    dry_run: bool = _DRY_RUN,
    budget: float | None = _BUDGET,
    concurrency: int = _CONCURRENCY,
) -> None:
    """Fidelity of each simulator against people: fidelity.json / .csv, fidelity_ranking.csv and
    indistinguishability.csv (annotators' guesses, the LLM judge with --judge, the classifier)."""
    from analysis.dataset import load_study
    from analysis.fidelity import (
        choose_embedder,
        fidelity_records,
        label_index_of,
        study_fidelity,
        write_fidelity,
    )
    from analysis.instruments import merge_fidelity, study_instruments
    from analysis.likeness import likeness_tables
    from db.engine import ready_engine
    from workbench.cli._common import output_dir, output_file

    if splits < 20:
        raise UserInputError("--splits must be at least 20 for a usable human ceiling")
    if n_boot < 0:
        raise UserInputError("--n-boot must be 0 (no intervals) or more")
    choose_embedder(embedding)  # an unknown name fails before any work
    _check_judge_flags(judge, judge_samples, judge_pairs, dry_run, budget, concurrency)
    config = Settings.from_env()
    chat = _judge_model(judge, config, dry_run) if judge else None
    if not dry_run:
        output_dir(out, "--out")
        output_file(json_file, "--json")
    engine = ready_engine(config.db_url)
    if dry_run:
        data = load_study(engine, study, features=False)
        for line in _judge_plan(engine, data, judge, judge_samples, judge_pairs, config).lines():
            typer.echo(line)
        return
    with steps("measuring fidelity", expected=4) as step:
        step("loading conversations, labels and features")
        data = load_study(engine, study)
        step("label-based distances")
        like = likeness_tables(data, n_boot=n_boot) if data.dimensions else None
        step("fidelity metrics and their human ceilings")
        tables = study_fidelity(
            engine, data, splits=splits, n_boot=n_boot, likeness=like, embedding=embedding
        )
        step("the participants' instruments: survey error, rank agreement, twins")
        inst = study_instruments(engine, data, splits=splits, fidelity_boot=n_boot, comparisons=False)
        tables = merge_fidelity(tables, inst["records"], label_index_of(like))
    judged = _run_judge(engine, data, chat, judge_samples, judge_pairs, budget, concurrency, config, n_boot)
    three = _indistinguishability(engine, data, tables, judged)
    tables["indistinguishability"] = three["three_way"]
    tables["indistinguishability_agreement"] = three["agreement"]
    _summary(tables, data)
    if inst["note"]:
        typer.echo(inst["note"])
    for p in write_fidelity(tables, out):
        typer.echo(f"wrote {p}")
    if json_file is not None:
        import json

        json_file.write_text(
            json.dumps(fidelity_records(tables["records"]), ensure_ascii=False, indent=1), encoding="utf-8"
        )
        typer.echo(f"wrote {json_file}")


def _summary(tables, data) -> None:
    """One line per missing user kind, then the ranking."""
    kinds = set(data.conversations["user_kind"])
    if "agent" not in kinds:
        typer.echo("No simulated conversations in this study: only the human ceiling is reported.")
    if "human" not in kinds:
        typer.echo("No human conversations in this study: no fidelity metric can be computed.")
    rec = tables["records"]
    emb = rec.loc[rec["metric"] == "coverage", "embedding"]
    if len(emb):
        typer.echo(f"Embedding: {emb.iloc[0]}")
    for r in tables["ranking"].itertuples():
        score = (
            "n/a"
            if r.fidelity_score is None or r.fidelity_score != r.fidelity_score
            else f"{r.fidelity_score:.3f}"
        )
        typer.echo(
            f"{r.rank}. {r.simulator}: fidelity score {score} ({r.n_families} families, {r.n_agent} conversations)"
        )


def _check_judge_flags(judge, samples, pairs, dry_run, budget, concurrency) -> None:
    from workbench.cli._common import at_least

    if not judge:
        used = [f for f, on in (("--dry-run", dry_run), ("--budget", budget is not None)) if on]
        if used:
            raise UserInputError(f"{' and '.join(used)} only apply with --judge MODEL")
    at_least(samples, 1, "--judge-samples")
    at_least(pairs, 1, "--judge-pairs")
    at_least(concurrency, 1, "--concurrency")
    if budget is not None and budget < 0:
        raise UserInputError(f"--budget must be at least 0 (USD), got {budget}")


def _judge_model(name: str, config, dry_run: bool):
    """The judge's ChatModel (None in a dry run): an unknown provider exits 2; a missing key exits 2
    in a real run and is a note in a dry run."""
    from db.errors import MissingKeyError
    from workbench.llm import get_model

    try:
        return get_model(name, prices_file=config.prices_file)
    except MissingKeyError as exc:
        if not dry_run:
            raise
        typer.echo(f"note: {exc} (a real run needs it).", err=True)
        return None


def _judge_plan(engine, data, name, samples, pairs, config):
    from workbench.judge import plan_judge
    from workbench.llm.prices import cost_of

    return plan_judge(
        engine, data, name, samples, pairs, cost_of=lambda m, p, c: cost_of(m, p, c, config.prices_file)
    )


def _run_judge(engine, data, chat, samples, pairs, budget, concurrency, config, n_boot):
    """The judge's summary and fidelity rows (None without --judge)."""
    if chat is None:
        return None
    from workbench.cli._progress import progress_bar
    from workbench.judge import PURPOSE, judge_tables, run_judge_sync
    from workbench.llm import recorded

    plan = _judge_plan(engine, data, chat.name, samples, pairs, config)
    if budget is not None and plan.n_calls and plan.cost_usd is None:
        raise UserInputError(f"--budget needs a price for {chat.name}: add it to the price table")
    for line in plan.lines():
        typer.echo(line)
    model = recorded(chat, engine, purpose=PURPOSE, cache=True)  # the cache is the judge's store
    with progress_bar("judging", unit="judgements") as tick:
        res = run_judge_sync(engine, plan, model, concurrency=concurrency, budget=budget, progress=tick)
    typer.echo(
        f"Judge: {res.calls} calls, {res.cache_hits} answered from the cache, cost ${res.cost_usd:.4f}; "
        f"{res.errors} samples without a verdict (excluded)"
        + (f", first: {res.first_error}" if res.first_error else "")
        + "."
    )
    if res.budget_skipped:
        typer.echo(f"Budget reached: {res.budget_skipped} calls not started (rerun to continue).")
    return judge_tables(res.judgements, chat.name, plan.prompt["label"], samples, n_boot=n_boot)


def _indistinguishability(engine, data, tables, judged):
    """Add the judge's rows to the records (and re-rank); the three-way table."""
    import pandas as pd

    from analysis.fidelity import ranking_df
    from analysis.indistinguishability import indistinguishability_tables, with_judge_records

    summary = None
    if judged is not None:
        summary, recs = judged
        labels = dict(zip(tables["ranking"]["simulator"], tables["ranking"]["labels"]))
        tables["records"] = with_judge_records(tables["records"], recs)
        tables["ranking"] = ranking_df(tables["records"], labels)
        for r in summary.itertuples():
            if pd.notna(r.win_rate):
                cal = f"{r.calibrated:.3f}" if pd.notna(r.calibrated) else "n/a"
                typer.echo(
                    f"{r.simulator}: judge win rate {r.win_rate:.3f} ({r.n_pairs} pairs), calibrated {cal}"
                )
    return indistinguishability_tables(engine, data, tables["records"], summary)


def register(app: typer.Typer) -> None:
    app.command()(likeness)
