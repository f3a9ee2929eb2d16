"""Scenario library and study commands: ``workbench scenarios list|validate|sync``, ``workbench study create``."""

from __future__ import annotations

from pathlib import Path

import typer

from db.errors import UserInputError
from db.settings import Settings

scenarios_app = typer.Typer(
    help="The scenario library: list, validate and sync scenario packs.", no_args_is_help=True
)
study_app = typer.Typer(
    help="Create studies (scenario x task context x profile conditions).", no_args_is_help=True
)


@scenarios_app.command("list")
def list_scenarios(
    dirs: list[Path] | None = typer.Option(
        None, "--dir", help="Extra pack directory (repeatable); WORKBENCH_SCENARIO_DIRS is always read."
    ),
) -> None:
    """List the scenarios of the library: key, names, task contexts per language, source file."""
    from rich.console import Console
    from rich.table import Table

    from scenarios import load_library

    lib = load_library(dirs, extra_dirs=Settings.from_env().scenario_dirs)
    table = Table(title=f"{len(lib.scenarios)} scenarios, {len(lib.profiles)} profiles")
    for col in (
        "key",
        "name (en)",
        "name (zh)",
        "in reference",
        "contexts en",
        "contexts zh",
        "aspects",
        "source",
    ):
        table.add_column(col)
    for key in sorted(lib.scenarios):
        s = lib.scenarios[key]
        langs: dict[str, dict[str, int]] = {}
        for tc in s.task_contexts:
            langs.setdefault(tc.language, {}).setdefault(tc.set, 0)
            langs[tc.language][tc.set] += 1

        def fmt(lang: str, langs: dict = langs) -> str:
            per = langs.get(lang, {})
            return (
                f"{sum(per.values())} (" + ", ".join(f"{k} {v}" for k, v in sorted(per.items())) + ")"
                if per
                else "0"
            )

        table.add_row(
            key,
            s.names.en,
            s.names.zh or "",
            "yes" if s.in_reference else "no",
            fmt("en"),
            fmt("zh"),
            ", ".join(a.key for a in s.aspects),
            _where(lib.sources["scenario:" + key]),
        )
    Console(width=200).print(table)


def _where(path: Path) -> str:
    from scenarios import PACKS_DIR

    return f"bundled:{path.name}" if path.parent.resolve() == PACKS_DIR else str(path)


@scenarios_app.command("validate")
def validate(path: Path = typer.Argument(..., help="A pack file or a directory of pack files.")) -> None:
    """Validate pack file(s) without writing anything; exit status 2 on any problem."""
    from scenarios import load_files

    lib = load_files([path])
    n_ctx = sum(len(s.task_contexts) for s in lib.scenarios.values())
    typer.echo(
        f"OK: {len(lib.files)} file(s), {len(lib.scenarios)} scenario(s), {n_ctx} task context(s), "
        f"{len(lib.profiles)} profile(s), {len(lib.profile_fields)} profile field(s)"
    )


@scenarios_app.command("sync")
def sync() -> None:
    """Write the library's scenarios, task contexts and profiles to the database (idempotent)."""
    from db.engine import ready_engine, session_scope
    from scenarios import load_library, sync_library

    config = Settings.from_env()
    lib = load_library(extra_dirs=config.scenario_dirs)
    engine = ready_engine(config.db_url)
    with session_scope(engine) as session:
        report = sync_library(session, lib)
    typer.echo(f"Synced the scenario library: {report}")


_QUESTIONNAIRES_HELP = (
    "Questionnaire file (YAML; check it with `workbench questionnaires validate`); default: the reference "
    "study's items."
)


@study_app.command("create")
def create(
    name: str = typer.Argument(..., help="Study name (unique)."),
    assistant_model: str = typer.Option(
        ..., "--assistant-model", help="Assistant model as provider/model, e.g. openai/gpt-4o-mini."
    ),
    scenarios: list[str] | None = typer.Option(
        None,
        "--scenarios",
        "--scenario",
        help="Scenario key (repeatable or comma-separated); default: the reference's four.",
    ),
    profiles: int = typer.Option(
        0,
        "--profiles",
        min=0,
        help="Pool profiles to sample (seeded); each is "
        "crossed with every task context (0 = no fixed profile: participants bring "
        "their own).",
    ),
    language: str = typer.Option("en", "--language", help="en or zh: task contexts and interface language."),
    system_prompt: Path | None = typer.Option(
        None, "--system-prompt", help="File with the assistant's system prompt."
    ),
    temperature: float | None = typer.Option(None, "--temperature", help="Assistant temperature."),
    max_tokens: int | None = typer.Option(None, "--max-tokens", help="Assistant max tokens per reply."),
    seed: int = typer.Option(0, "--seed", help="Seed for sampling profiles."),
    tasks_per_participant: int | None = typer.Option(None, "--tasks-per-participant", min=1),
    min_turns: int | None = typer.Option(
        None, "--min-turns", min=1, help="User turns before the user may finish."
    ),
    max_turns: int | None = typer.Option(
        None, "--max-turns", min=1, help="User turns after which the task ends."
    ),
    profile_mode: str | None = typer.Option(
        None,
        "--profile-mode",
        help="participant (fill in the profile questionnaire) or assigned (use the condition's profile).",
    ),
    context_sets: list[str] | None = typer.Option(
        None,
        "--context-set",
        help="Task-context set(s) to draw from (default main; also new, human_exp, human_v1, human_v2).",
    ),
    description: str | None = typer.Option(None, "--description"),
    questionnaires: Path | None = typer.Option(None, "--questionnaires", help=_QUESTIONNAIRES_HELP),
) -> None:
    """Create a study and its conditions (every scenario x task context x sampled profile)."""
    from db.engine import ready_engine, session_scope
    from scenarios import load_library
    from workbench.participation.questionnaires import load_questionnaires
    from workbench.studies import create_study

    settings = _settings_from_flags(tasks_per_participant, min_turns, max_turns, profile_mode)
    prompt_text = _read_prompt(system_prompt)
    keys = [k.strip() for item in (scenarios or []) for k in item.split(",") if k.strip()] or None
    chosen_questionnaires = load_questionnaires(questionnaires) if questionnaires else None
    config = Settings.from_env()
    with session_scope(ready_engine(config.db_url)) as session:
        study, n = create_study(
            session,
            name,
            assistant_model,
            scenarios=keys,
            profiles=profiles or None,
            language=language,
            system_prompt=prompt_text,
            temperature=temperature,
            max_tokens=max_tokens,
            settings=settings,
            seed=seed,
            description=description,
            context_sets=context_sets,
            library=load_library(extra_dirs=config.scenario_dirs),
            questionnaires=chosen_questionnaires,
        )
        _report_created(study, n, profiles)
    _warn_missing_key(assistant_model)


def _report_created(study, n: int, profiles: int) -> None:
    scen = ", ".join(study.settings["scenarios"])
    typer.echo(
        f"Created study {study.name!r} (id {study.id}) with {n} conditions: scenarios {scen}; "
        f"language {study.language}; {profiles or 'no fixed'} profile(s), each with every task context; "
        f"questionnaires {study.settings['questionnaires']['version']}."
    )


def _read_prompt(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserInputError(f"cannot read the system prompt file {path}: {exc}") from None


def _settings_from_flags(
    tasks_per_participant: int | None, min_turns: int | None, max_turns: int | None, profile_mode: str | None
) -> dict:
    """The study settings given on the command line (the others keep their defaults)."""
    if profile_mode is not None and profile_mode not in ("participant", "assigned"):
        raise UserInputError(f"--profile-mode must be participant or assigned (got {profile_mode!r})")
    given = dict(
        tasks_per_participant=tasks_per_participant,
        min_turns=min_turns,
        max_turns=max_turns,
        profile_mode=profile_mode,
    )
    return {k: v for k, v in given.items() if v is not None}


def _warn_missing_key(assistant_model: str) -> None:
    """The study is made, but participants get no reply until the model's key is set: say so."""
    from workbench.llm import check_model_name

    missing_key = check_model_name(assistant_model.strip())
    if missing_key:
        typer.echo(
            f"warning: {missing_key}. Participants get no reply until it is set where the app runs.", err=True
        )


def register(app: typer.Typer) -> None:
    app.add_typer(scenarios_app, name="scenarios")
    app.add_typer(study_app, name="study")
