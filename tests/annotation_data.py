"""Small hand-made studies for the annotation tests (no dataset needed)."""

from __future__ import annotations

from sqlmodel import Session, select

from db.models import (
    Annotator,
    AssistantConfig,
    Condition,
    Conversation,
    Profile,
    Scenario,
    SimulatorConfig,
    Study,
    TaskContext,
    Turn,
)

SCENARIOS = ["travel_planning", "recipe_planning"]

# Text that would give the user kind away if it leaked onto the page.
SECRET_MODEL = "openai/gpt-4o-SECRETMODEL"
SECRET_SIMULATOR = "SimulatorSECRET v2"
SECRET_PATH = "LLM_agent_user/travel_planning/17.json"


def make_study(
    session: Session,
    n_per_cell: int = 3,
    language: str = "en",
    annotators=("ann", "bob", "cy"),
    name: str = "pilot",
) -> Study:
    """A study with ``n_per_cell`` conversations per (user kind, scenario), each 2 user + 2 assistant turns.

    Agent conversations are in English (with Chinese translations); human ones in ``language``.
    """
    study = Study(name=name, language=language)
    session.add(study)
    session.flush()
    cfg = AssistantConfig(fingerprint=f"fp-{name}", model=SECRET_MODEL, name=SECRET_MODEL)
    sim = SimulatorConfig(fingerprint=f"sim-{name}", model=SECRET_MODEL, name=SECRET_SIMULATOR)
    prof = Profile(key=f"pool-{name}", text="a persona")
    session.add_all([cfg, sim, prof])
    session.flush()
    for s_i, key in enumerate(SCENARIOS):
        scen = session.exec(select(Scenario).where(Scenario.key == key)).first()
        if scen is None:
            scen = Scenario(
                key=key,
                name=key.replace("_", " ").title(),
                names={"zh": "旅行规划" if s_i == 0 else "菜谱规划"},
            )
            session.add(scen)
            session.flush()
        tc = TaskContext(scenario_id=scen.id, key=f"{name}-{key}", text="Plan something")
        session.add(tc)
        session.flush()
        cond = Condition(
            study_id=study.id,
            key=f"{name}-{key}",
            scenario_id=scen.id,
            task_context_id=tc.id,
            profile_id=prof.id,
            assistant_config_id=cfg.id,
            language=language,
        )
        session.add(cond)
        session.flush()
        for kind in ("agent", "human"):
            for i in range(n_per_cell):
                conv = Conversation(
                    study_id=study.id,
                    condition_id=cond.id,
                    user_kind=kind,
                    replicate=i,
                    status="completed",
                    language="en" if kind == "agent" else language,
                    simulator_config_id=sim.id if kind == "agent" else None,
                    wave="agent" if kind == "agent" else "human_v1",
                    source="imported",
                    external_id=SECRET_PATH.replace("17", f"{key}-{kind}-{i}"),
                    meta={"model": SECRET_MODEL},
                )
                session.add(conv)
                session.flush()
                for t in range(4):
                    role = "user" if t % 2 == 0 else "assistant"
                    text = f"{kind}-{key}-{i} turn {t} ({role})"
                    zh = f"[zh] {text}" if kind == "agent" else None
                    session.add(
                        Turn(
                            conversation_id=conv.id,
                            index=t,
                            role=role,
                            content=text,
                            translation=zh,
                            translation_language="zh" if zh else None,
                            intent=["ask"] if kind == "agent" and role == "user" else None,
                        )
                    )
    for a in annotators:
        session.add(Annotator(name=a, role="annotator"))
    session.flush()
    return study


def full_labels(codebook) -> dict[str, str]:
    """A valid value for every conversation-level dimension (the first label)."""
    return {d.name: d.labels[0] for d in codebook.conversation_dimensions()}


def humour_codebook(tmp_path):
    """The default codebook extended by one ordinal dimension, ``humour`` (version ``1.1+lab-1``)."""
    from annotation.codebook import load_codebook

    ext = tmp_path / "lab.yaml"
    ext.write_text(
        'version: "lab-1"\nextends: default\ndimensions:\n  - name: humour\n    scale: ordinal\n'
        '    definition: {en: "How playful."}\n    labels: ["1", "2", "3"]\n',
        encoding="utf-8",
    )
    return load_codebook(ext)
