"""Small study fixtures for the participation and app tests (built directly from the models)."""

from __future__ import annotations

from sqlmodel import Session

from db.models import Condition, Profile, Scenario, Study, TaskContext
from db.repo import get_or_create_assistant_config


def make_study(
    session: Session,
    name: str = "pilot",
    scenarios=("travel_planning", "recipe_planning"),
    contexts: int = 2,
    model: str = "scripted/test",
    settings: dict | None = None,
    with_profiles: bool = False,
) -> Study:
    study = Study(name=name, settings=settings or {})
    session.add(study)
    session.flush()
    cfg = get_or_create_assistant_config(session, model=model, system_prompt="You are a helpful assistant.")
    for key in scenarios:
        scen = session.exec(Scenario.__table__.select().where(Scenario.key == key)).first()
        if scen is None:
            scen = Scenario(key=key, name=key.replace("_", " ").title(), names={"zh": key})
            session.add(scen)
            session.flush()
        else:
            scen = session.get(Scenario, scen.id)
        for i in range(contexts):
            ctx = TaskContext(
                scenario_id=scen.id,
                key=f"{name}-en-{i}",
                language="en",
                text=f"Plan something for {key} #{i}.",
                translations={"zh": f"任务 {key} #{i}"},
            )
            session.add(ctx)
            session.flush()
            prof_id = None
            if with_profiles:
                prof = Profile(
                    key=f"{name}-pool-{key}-{i}", fields={"age": 30}, text=f"A person #{i}", source="pool"
                )
                session.add(prof)
                session.flush()
                prof_id = prof.id
            session.add(
                Condition(
                    study_id=study.id,
                    key=f"{key}/{i}",
                    scenario_id=scen.id,
                    task_context_id=ctx.id,
                    profile_id=prof_id,
                    assistant_config_id=cfg.id,
                )
            )
    session.flush()
    return study


def profile_answers(language: str = "en") -> dict:
    """Valid answers to every profile field: the first option, or the lowest allowed number."""
    from workbench.participation.flow import profile_fields

    out = {}
    for f in profile_fields(language):
        if f["type"] == "choice":
            out[f["name"]] = f["options"][0][0]
        elif f["type"] == "multi_choice":
            out[f["name"]] = [f["options"][0][0]]
        elif f["type"] == "integer":
            out[f["name"]] = max(f["min"] or 0, 30) if (f["max"] or 99) >= 30 else f["min"]
        else:
            out[f["name"]] = "something"
    return out


POST_TASK = {
    "Memorization": "no",
    "Detail": "detailed",
    "Availability": "very_useful",
    "Diversity": "average",
    "free_text": "fine",
}
