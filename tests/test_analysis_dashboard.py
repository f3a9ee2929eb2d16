"""Dashboard page (Streamlit AppTest) and the filter / drill-down functions behind it."""

from __future__ import annotations

from pathlib import Path

from analysis.compare import analysis_frame
from analysis.dataset import load_study
from analysis.explore import drilldown_ids, filter_options, filter_study
from analysis.features import load_pipelines
from analysis.synthetic import add_instruments, make_study

PAGE = Path(__file__).resolve().parent.parent / "workbench" / "app" / "views" / "dashboard.py"


def test_filters_and_drilldown(sqlite_engine):
    make_study(sqlite_engine, "dash", n_human=30, n_agent=30, simulators=2, seed=1)
    data = load_study(sqlite_engine, "dash", pipelines=load_pipelines(trained=False))
    opts = filter_options(data)
    assert opts["simulators"] == ["sim-0", "sim-1"] and "travel_planning" in opts["scenarios"]
    sub = filter_study(data, scenarios=["travel_planning"], simulators=["sim-0"])
    c = sub.conversations
    assert set(c["scenario"]) == {"travel_planning"}
    assert set(c.loc[c.user_kind == "agent", "simulator"]) == {"sim-0"} and (c.user_kind == "human").any()
    assert set(sub.labels["conversation_id"]) <= set(c["conversation_id"])
    frame = analysis_frame(sub)
    ids = drilldown_ids(frame, "politeness", "agent", "all", "Polite")
    expected = frame[(frame.user_kind == "agent") & (frame.politeness == "Polite")][
        "conversation_id"
    ].tolist()
    assert ids == expected and ids
    assert drilldown_ids(frame, "politeness", "agent", "recipe_planning", "Polite") == []


def test_dashboard_page_renders_for_researchers(sqlite_url, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from db.engine import make_engine
    from db.migrate import upgrade

    eng = make_engine(sqlite_url)
    upgrade(eng)
    dash_id = make_study(eng, "dash", n_human=20, n_agent=20, seed=2)
    add_instruments(eng, dash_id, seed=2)  # per-reply ratings and post-task answers of both kinds
    make_study(eng, "other", n_human=4, n_agent=4, seed=3, label_source="llm:other-study")
    eng.dispose()
    monkeypatch.setenv("WORKBENCH_DB_URL", sqlite_url)
    at = AppTest.from_file(str(PAGE), default_timeout=120)
    at.session_state["user"] = {"id": 1, "name": "r", "role": "researcher"}
    at.run()
    assert not at.exception, at.exception
    assert any("Dashboard" in t.value for t in at.title)
    assert any("20 human and 20 agent" in c.value for c in at.caption)
    # the fidelity section: the ranking and every measure beside the human ceiling, named plainly
    assert any(h.value == "Fidelity against the human ceiling" for h in at.subheader)
    frames = [d.value for d in at.dataframe]
    ranking = next(f for f in frames if "Fidelity score" in f.columns)
    assert list(ranking["Simulator"]) == ["sim-0"] and ranking["Rank"].tolist() == [1]
    measures = next(f for f in frames if "Share of ceiling" in f.columns and "Measure" in f.columns)
    assert "Fingerprint (mean of D1-D4)" in set(measures["Measure"]) and "Human ceiling" in measures.columns
    assert not any("usi_d" in str(m) for m in measures["Measure"])
    # the whole suite (workbench.judge.fidelity_suite): the instruments' rows and the survey error
    assert any("participants' instruments" in m.value for m in at.markdown)
    assert any("survey" in str(m).lower() for m in measures["Measure"])
    # readable names: dimension titles in the choices, not snake_case ids
    dim_box = next(b for b in at.selectbox if b.label == "Dimension")
    assert dim_box.options and all("_" not in o for o in dim_box.options)
    # the label sources offered are those labelling the chosen study, with their counts
    box = next(b for b in at.selectbox if b.label == "Label source")
    assert box.options[0] == "(best available)" and len(box.options) == 2
    assert box.options[1].startswith("llm:synthetic (") and "labels)" in box.options[1]
    next(b for b in at.selectbox if b.label == "Study").set_value("other").run()
    assert not at.exception, at.exception
    box = next(b for b in at.selectbox if b.label == "Label source")
    assert [o.split(" (")[0] for o in box.options] == ["(best available)", "llm:other-study"]

    at2 = AppTest.from_file(str(PAGE), default_timeout=60)
    at2.session_state["user"] = {"id": 2, "name": "a", "role": "annotator"}
    at2.run()
    assert any("access" in e.value for e in at2.error)


def test_drilldown_renders_replies_as_safe_markdown(sqlite_url, monkeypatch):
    from sqlmodel import Session, select
    from streamlit.testing.v1 import AppTest

    from db.engine import make_engine
    from db.migrate import upgrade
    from db.models import Turn

    reply = (
        "### Picks\n**Dune** is great.\n\n- ![x](http://127.0.0.1:9/t.png)\n- <img src=x onerror=alert(1)> <script>\n"
        "- [click](javascript:alert(1)) :red[big] $x$"
    )
    eng = make_engine(sqlite_url)
    upgrade(eng)
    make_study(eng, "dash", n_human=20, n_agent=20, seed=2)
    with Session(eng) as s:
        for t in s.exec(select(Turn)).all():
            t.content = reply if t.role == "assistant" else "**hi** ![me](http://evil.example/me.png)"
            s.add(t)
        s.commit()
    data = load_study(eng, "dash")
    frame = analysis_frame(data)
    from analysis.findings import Names
    from annotation.codebook import load_codebook

    dim = Names.of(load_codebook()).sort(data.dimensions)[0]  # the page lists them in codebook group order
    value = frame.loc[frame.user_kind == "agent", dim].dropna().iloc[0]
    eng.dispose()
    monkeypatch.setenv("WORKBENCH_DB_URL", sqlite_url)
    at = AppTest.from_file(str(PAGE), default_timeout=120)
    at.session_state["user"] = {"id": 1, "name": "r", "role": "researcher"}
    at.run()
    # a click on a bar of the distribution chart (its selection state, as the browser would send it)
    at.session_state[f"dist-{dim}"] = {"selection": {"points": [{"customdata": ["agent", "all", value]}]}}
    at.run()
    assert not at.exception, at.exception
    replies = [m.value for m in at.markdown if "Picks" in m.value]
    assert replies and all(v.startswith("### Picks") and "**Dune**" in v for v in replies)
    assert all("![" not in v and "](" not in v and "\\[image" in v and "\\:\u2060red" in v for v in replies)
    assert not any(m.proto.allow_html for m in at.markdown)
    assert any(
        t.value == "**hi** ![me](http://evil.example/me.png)" for t in at.text
    )  # user turns: plain text


def test_unfinished_conversations_are_left_out_and_new_data_shows_at_once(sqlite_url, monkeypatch):
    """In-progress and failed conversations are not analysed (the page says how many); the page's
    cache is keyed on the data, so a conversation that ends shows up on the next run, not minutes later."""
    from sqlmodel import Session, select
    from streamlit.testing.v1 import AppTest

    from analysis.dataset import excluded_note
    from db.engine import make_engine
    from db.migrate import upgrade
    from db.models import Conversation
    from db.repo import data_version

    eng = make_engine(sqlite_url)
    upgrade(eng)
    make_study(eng, "dash", n_human=12, n_agent=12, seed=2)
    with Session(eng) as s:
        convs = s.exec(select(Conversation).order_by(Conversation.id)).all()
        humans = [c for c in convs if c.user_kind == "human"]
        agents = [c for c in convs if c.user_kind == "agent"]
        humans[0].status, humans[1].status, agents[0].status = "in_progress", "in_progress", "failed"
        humans[2].status = "abandoned"  # an ending: still analysed
        for c in (humans[0], humans[1], agents[0], humans[2]):
            s.add(c)
        s.commit()
        study_id = humans[0].study_id
        before = data_version(s, study_id)
    data = load_study(eng, "dash", features=False)
    assert len(data.conversations) == 24 - 3
    assert data.meta["excluded"] == {"human_in_progress": 2, "agent_failed": 1}
    assert (
        excluded_note(data)
        == "Not analysed: 1 failed agent conversation, 2 human conversations still in progress."
    )
    monkeypatch.setenv("WORKBENCH_DB_URL", sqlite_url)
    at = AppTest.from_file(str(PAGE), default_timeout=120)
    at.session_state["user"] = {"id": 1, "name": "r", "role": "researcher"}
    at.run()
    assert not at.exception, at.exception
    assert any(
        "10 human and 11 agent conversations. Not analysed: 1 failed agent conversation, "
        "2 human conversations still in progress." in c.value
        for c in at.caption
    ), [c.value for c in at.caption]
    with Session(eng) as s:
        c = s.get(Conversation, humans[0].id)
        c.status = "completed"
        s.add(c)
        s.commit()
        assert data_version(s, study_id) != before
    at.run()
    assert any(
        "11 human and 11 agent conversations. Not analysed: 1 failed agent conversation, "
        "1 human conversation still in progress." in c.value
        for c in at.caption
    ), [c.value for c in at.caption]
    eng.dispose()


def test_fidelity_view_names_measures_and_passes_further_tables_through():
    """The dashboard's fidelity section from given tables: measures by plain name beside the human
    ceiling, shares as percentages, any further table of the fidelity analysis (the three-way
    indistinguishability table, the instruments) passed on with a title; nothing silently empty."""
    import pandas as pd

    from analysis.dashboard import fidelity_view
    from analysis.findings import Names

    records = pd.DataFrame(
        [
            {"simulator": "sim-a", "metric": "usi_d", "value": 0.8, "ci_low": 0.7, "ci_high": 0.9,
             "human_ceiling": 0.9, "calibrated": 0.5, "note": None},
            {"simulator": "sim-a", "metric": "feature:words_per_turn", "value": 0.9, "ci_low": 0.8,
             "ci_high": 1.0, "human_ceiling": 0.95, "calibrated": 0.94, "note": None},
            {"simulator": "sim-a", "metric": "frechet", "value": None, "ci_low": None, "ci_high": None,
             "human_ceiling": None, "calibrated": None, "note": "too few conversations"},
        ]
    )  # fmt: skip
    ranking = pd.DataFrame([{"rank": 1, "simulator": "sim-a", "n_agent": 4, "fidelity_score": 0.5}])
    extra = pd.DataFrame([{"simulator": "sim-a", "judge_win_rate": 0.4}])
    view = fidelity_view(
        None, None, Names(), {"records": records, "ranking": ranking, "indistinguishability": extra}
    )
    assert view.metrics["Measure"].tolist() == ["Fingerprint (mean of D1-D4)", "Frechet distance"]
    assert view.metrics["Share of ceiling"].tolist() == ["50%", ""]
    assert "Human ceiling" in view.metrics.columns and len(view.features) == 1
    assert view.ranking["Fidelity score"].tolist() == ["50%"]
    assert view.notes == ["Frechet distance: too few conversations"]
    [(title, table)] = view.extra.items()
    assert title.startswith("Indistinguishability three ways") and len(table) == 1
    empty = fidelity_view(None, None, Names(), {"records": records.iloc[:0], "ranking": ranking.iloc[:0]})
    assert empty.ranking is None and empty.notes and "people and of simulated users" in empty.notes[0]
