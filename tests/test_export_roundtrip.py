"""Every export format round-trips a study made through the participant flow: export (jsonl, csv,
parquet), `workbench import jsonl DIR` into a new study, the same counts of conversations, turns,
labels, questionnaire answers by questionnaire, participants and simulation runs."""

from __future__ import annotations

from collections import Counter

from sqlalchemy import func
from sqlmodel import Session, select

from annotation.store import LabelRecord, ensure_source, write_labels
from db.models import (
    Conversation,
    Label,
    Participant,
    QuestionnaireResponse,
    SimulationRun,
    Study,
    Turn,
)
from tests.cli_helpers import run_cli
from tests.participation_helpers import POST_TASK, make_study, profile_answers
from workbench import participation as P
from workbench.dataio.export import export_study
from workbench.llm import ScriptedModel
from workbench.simulation import SimulationSpec, run_simulation


def _participant_study(engine) -> None:
    """Study "pilot": one participant through consent, profile, two rated tasks, post-task
    questionnaires and the attention check; one who declined consent; labels (conversation and
    turn level); a scripted simulation twin of every human conversation."""
    with Session(engine) as s:
        make_study(s, settings={"tasks_per_participant": 2, "min_turns": 1, "max_turns": 2})
        done, declined = P.create_invites(s, "pilot", 2)
        s.commit()
    model = ScriptedModel(lambda msgs: f"Answer {sum(m['role'] == 'user' for m in msgs)}")

    def factory(engine, cfg, study_id, conv_id):
        return model

    with Session(engine) as s:
        P.give_consent(s, P.open_participant(s, declined), False)
        p = P.open_participant(s, done)
        P.give_consent(s, p, True)
        P.finish_instructions(s, p)
        P.submit_profile(s, p, profile_answers())
        s.commit()
        pid = p.id
    for task in range(2):
        for n, text in enumerate(["Hello", "second"]):
            with Session(engine) as s:
                P.send_message(s, s.get(Participant, pid), text)
                s.commit()
            "".join(P.stream_reply(engine, pid, factory))
            with Session(engine) as s:
                P.rate_reply(s, s.get(Participant, pid), 2 * n + 1, "no", 4, "ok")
                s.commit()
        with Session(engine) as s:
            p = s.get(Participant, pid)
            P.finish_task(s, p)
            P.submit_post_task(s, p, POST_TASK, attention="blue" if task == 0 else None)
            s.commit()
    run_simulation(engine, SimulationSpec(study="pilot", simulator_model="scripted/sim", twin_of=["all"]))
    with Session(engine) as s:
        src = ensure_source(s, "human:ann", "human")
        convs = s.exec(select(Conversation.id)).all()
        write_labels(
            s,
            src,
            [LabelRecord(c, "politeness", "Polite") for c in convs]
            + [LabelRecord(convs[0], "hallucination", "no", turn_index=1)],
        )
        s.commit()


def _counts(engine, study: str) -> dict:
    with Session(engine) as s:
        sid = s.exec(select(Study.id).where(Study.name == study)).one()
        convs = s.exec(select(Conversation).where(Conversation.study_id == sid)).all()
        ids = [c.id for c in convs]
        return {
            "conversations": Counter(c.user_kind for c in convs),
            "twins": sum(c.twin_of_id is not None for c in convs),
            "turns": s.exec(select(func.count(Turn.id)).where(Turn.conversation_id.in_(ids))).one(),
            "labels": s.exec(select(func.count(Label.id)).where(Label.conversation_id.in_(ids))).one(),
            "answers": Counter(
                s.exec(
                    select(QuestionnaireResponse.questionnaire).where(QuestionnaireResponse.study_id == sid)
                ).all()
            ),
            "participant_answers": s.exec(
                select(func.count(QuestionnaireResponse.id)).where(
                    QuestionnaireResponse.study_id == sid, QuestionnaireResponse.conversation_id.is_(None)
                )
            ).one(),
            "participants": Counter(
                s.exec(select(Participant.status).where(Participant.study_id == sid)).all()
            ),
            "runs": s.exec(select(func.count(SimulationRun.id)).where(SimulationRun.study_id == sid)).one(),
        }


def test_every_format_round_trips_a_participant_study(engine, use_db, tmp_path, capsys):
    """Found before: `import jsonl` crashed on the participant-level answers (consent, profile: no
    conversation id, read back as floats: int('4061.0')); Parquet kept only the answers tied to a
    conversation; csv and parquet exports could not be imported at all."""
    _participant_study(engine)
    before = _counts(engine, "pilot")
    assert before["conversations"] == {"human": 2, "agent": 2} and before["twins"] == 2
    assert before["participants"] == {"completed": 1, "screened_out": 1}
    assert {"consent", "profile", "post_task", "attention_check"} <= set(before["answers"])
    assert before["participant_answers"] == 12 and before["runs"] == 1 and before["labels"] == 5
    for fmt in ("jsonl", "csv", "parquet"):
        out = tmp_path / fmt
        export_study(engine, "pilot", fmt, out)
        code, stdout, err = run_cli(["import", "jsonl", str(out), "--study", f"copy-{fmt}"], capsys)
        assert code == 0, err
        assert _counts(engine, f"copy-{fmt}") == before, fmt
        # a re-import adds nothing
        code, _, err = run_cli(["import", "jsonl", str(out), "--study", f"copy-{fmt}"], capsys)
        assert code == 0 and _counts(engine, f"copy-{fmt}") == before, (fmt, err)
    # the `import export` spelling reads the same folders
    code, _, err = run_cli(["import", "export", str(tmp_path / "parquet"), "--study", "copy-x"], capsys)
    assert code == 0 and _counts(engine, "copy-x") == before, err


def test_a_folder_without_an_export_is_refused(tmp_path, capsys):
    code, _, err = run_cli(["import", "jsonl", str(tmp_path)], capsys)
    assert code == 2 and "records.csv" in err and "Traceback" not in err
