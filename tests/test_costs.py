"""workbench costs: spend by purpose, model and run, summed from the recorded calls."""

from __future__ import annotations

from sqlmodel import Session

from db.models import LLMCall, Study
from tests.cli_helpers import run_cli
from workbench.llm.costs import costs_df


def _calls(session: Session, study_id: int) -> None:
    def call(purpose, model, cost, run_id=None, error=None, hit=False):
        session.add(
            LLMCall(
                provider=model.split("/")[0],
                model=model,
                purpose=purpose,
                params={},
                study_id=study_id,
                run_id=run_id,
                cost_usd=cost,
                prompt_tokens=10,
                completion_tokens=5,
                error=error,
                cache_hit=hit,
            )
        )

    call("assistant", "openai/a", 0.25)
    call("assistant", "openai/a", 0.5)
    call("labeller", "openai/b", 1.0)
    call("labeller", "openai/b", None, error="HTTP 500")  # failed: counted, costs nothing
    call("labeller", "openai/b", 0.0, hit=True)  # answered from the cache


def test_costs_by_purpose_model_and_run(engine):
    with Session(engine) as s:
        study = Study(name="c", settings={})
        s.add(study)
        s.flush()
        _calls(s, study.id)
        s.add(Study(name="other", settings={}))
        s.commit()
        df = costs_df(s, study.id)
    rows = {r.purpose: r for r in df.itertuples()}
    assert rows["assistant"].calls == 2 and abs(rows["assistant"].cost_usd - 0.75) < 1e-12
    lab = rows["labeller"]
    assert (lab.calls, lab.failed_calls, lab.cached_calls, lab.cost_usd) == (3, 1, 1, 1.0)
    assert rows["total"].calls == 5 and abs(rows["total"].cost_usd - 1.75) < 1e-12
    assert rows["total"].prompt_tokens == 50


def test_costs_command(use_db, capsys):
    from db.engine import make_engine

    engine = make_engine(use_db)
    from db.migrate import upgrade

    upgrade(engine)
    with Session(engine) as s:
        study = Study(name="c", settings={})
        s.add(study)
        s.flush()
        _calls(s, study.id)
        s.commit()
    engine.dispose()
    code, out, err = run_cli(["costs", "--study", "c"], capsys)
    assert code == 0 and "labeller" in out and "$1.7500" in out, (out, err)
    code, out, _ = run_cli(["costs", "--study", "nope"], capsys)
    assert code == 2
