"""Comparison table, label-source choice, human-likeness and charts on synthetic studies in a real DB."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sqlmodel import Session

from analysis import charts
from analysis.compare import ALL_COLUMNS, COLUMNS, comparisons_df, matched_units_df
from analysis.dataset import choose_label_source, load_study
from analysis.features import load_pipelines
from analysis.likeness import classifier_auc, likeness_tables
from analysis.synthetic import make_study
from db.errors import NotFoundError, UserInputError
from db.models import LabelSource


@pytest.fixture(scope="module")
def pipelines():
    return load_pipelines(trained=False)


def test_comparison_table_on_synthetic_study(engine, pipelines):
    make_study(engine, "synth", n_human=160, n_agent=160, seed=1, simulators=2)
    data = load_study(engine, "synth", pipelines=pipelines)
    assert data.label_source == "llm:synthetic"
    comp = comparisons_df(data, n_boot=200)
    assert list(comp.columns[: len(COLUMNS)]) == COLUMNS and list(comp.columns) == ALL_COLUMNS
    pooled = comp[(comp["slice_by"] == "pooled")].set_index(["dimension", "test"])
    # Built-in differences are found, similar dimensions are not.
    assert pooled.loc[("politeness", "chi_square"), "effect_size"] > 0.7
    assert pooled.loc[("politeness", "chi_square"), "p_adjusted"] < 1e-6
    assert pooled.loc[("order", "chi_square"), "effect_size"] < 0.25
    assert pooled.loc[("question_broadness", "mann_whitney"), "effect_size"] < -0.2  # agents broader
    assert ("question_broadness", "ols_cluster_robust") in pooled.index
    assert ("user_words_per_turn", "welch_t") in pooled.index and ("end_kind", "chi_square") in pooled.index
    assert set(comp["scenario"]) >= {"all", "travel_planning", "recipe_planning"}
    assert set(comp.loc[comp["slice_by"] == "simulator", "slice"]) == {"sim-0", "sim-1"}
    assert (comp["label_source"] == "llm:synthetic").all()
    # Holm-adjusted p never below the raw p.
    ok = comp["p_value"].notna()
    assert (comp.loc[ok, "p_adjusted"] >= comp.loc[ok, "p_value"] - 1e-15).all()
    bh = comparisons_df(data, correction="bh", n_boot=200)
    assert (bh.loc[ok, "p_adjusted"] <= comp.loc[ok, "p_adjusted"] + 1e-12).all()
    with pytest.raises(UserInputError):
        comparisons_df(data, correction="bonf")
    # Families: the primary one holds one recommended, pooled, participant-clustered row per variable;
    # every family at most one row per variable; Holm runs within a family (statsmodels, by hand).
    primary = comp[comp["family"] == "primary"]
    assert (primary["slice_by"] == "pooled").all() and primary["dimension"].is_unique
    assert set(primary["test"]) <= {"wald_cluster_robust", "ordinal_cluster_robust", "ols_cluster_robust"}
    assert primary.set_index("dimension").loc["question_broadness", "test"] == "ordinal_cluster_robust"
    assert not comp.duplicated(["family", "dimension"]).any()
    from statsmodels.stats.multitest import multipletests

    fam = comp[comp["family"] == "pooled:all:mann_whitney"].dropna(subset=["p_value"])
    assert fam["p_adjusted"].tolist() == pytest.approx(list(multipletests(fam["p_value"], method="holm")[1]))
    assert {"mixed_random_intercept", "ordinal_cluster_robust"} <= set(pooled.index.get_level_values("test"))
    # Summaries keep every digit: the shares times n give the counts back.
    row = pooled.loc[("politeness", "chi_square")]
    counts = {k: v * row["n_human"] for k, v in json.loads(row["human_summary"]).items()}
    assert all(abs(c - round(c)) < 1e-9 for c in counts.values())


def test_json_records_keep_full_precision():
    from analysis.compare import comparison_records

    df = pd.DataFrame({"p_value": [5.1e-15, np.nan], "n_human": [3, 4], "note": ["", None]})
    text = json.dumps(comparison_records(df))
    back = json.loads(text)
    assert back[0]["p_value"] == 5.1e-15 and back[1]["p_value"] is None and back[0]["n_human"] == 3


def test_scenario_without_humans_gives_not_enough_data_rows(sqlite_engine, pipelines):
    make_study(
        sqlite_engine,
        "onesided",
        n_human=40,
        n_agent=60,
        seed=2,
        human_scenarios=["travel_planning", "recipe_planning"],
    )
    data = load_study(sqlite_engine, "onesided", pipelines=pipelines)
    comp = comparisons_df(data, n_boot=100)
    gifts = comp[comp["scenario"] == "preparing_gifts"]
    assert len(gifts) and gifts["note"].str.startswith("not enough data").all()
    assert (gifts["n_human"] == 0).all() and gifts["p_value"].isna().all()
    # Charts build on it (and on empty / one-sided data) without errors.
    from analysis.compare import analysis_frame

    frame = analysis_frame(data)
    assert charts.label_distribution_fig(frame, "politeness").data
    assert charts.label_distribution_fig(frame[frame["user_kind"] == "agent"], "politeness").data
    charts.label_distribution_fig(frame.iloc[0:0], "politeness")
    # a numeric scale is drawn on a category axis: every value has its tick, in scale order
    scale = frame.assign(ctx=[str(1 + i % 5) for i in range(len(frame))])
    fig = charts.label_distribution_fig(scale, "ctx", categories=["1", "2", "3", "4", "5"], by_scenario=False)
    assert fig.layout.xaxis.type == "category" and list(fig.layout.xaxis.categoryarray) == [
        "1",
        "2",
        "3",
        "4",
        "5",
    ]
    charts.forest_fig(comp, "scenario")
    charts.forest_fig(comp.iloc[0:0])
    # one marker per dimension: Cramer's V of the participant-clustered row, Cliff's delta of Mann-Whitney
    forest = charts.forest_fig(comp)
    pooled = comp[(comp["slice_by"] == "pooled") & (comp["kind"] == "label")].set_index(["dimension", "test"])
    ys = list(forest.data[0].y)
    assert len(ys) == len(set(ys)) and "politeness (cramers_v)" in ys
    x = dict(zip(ys, forest.data[0].x))
    assert x["politeness (cramers_v)"] == pytest.approx(
        pooled.loc[("politeness", "wald_cluster_robust"), "effect_size"]
    )
    hi = dict(zip(ys, np.asarray(forest.data[0].error_x.array) + np.asarray(forest.data[0].x)))
    assert hi["politeness (cramers_v)"] == pytest.approx(
        pooled.loc[("politeness", "wald_cluster_robust"), "ci_high"]
    )
    charts.turn_length_fig(frame[frame["user_kind"] == "agent"])
    charts.turn_length_fig(pd.DataFrame())
    charts.likeness_fig(pd.DataFrame(columns=["simulator", "dimension", "js_distance", "ci_low", "ci_high"]))
    charts.agreement_heatmap_fig(None)


def test_empty_study_and_unknown_source(sqlite_engine, pipelines):
    make_study(sqlite_engine, "empty", n_human=0, n_agent=0)
    data = load_study(sqlite_engine, "empty", pipelines=pipelines)
    assert data.label_source is None
    comp = comparisons_df(data)
    assert list(comp.columns) == ALL_COLUMNS and comp.empty
    tables = likeness_tables(data)
    assert tables["ranking"].empty
    with pytest.raises(NotFoundError):
        load_study(sqlite_engine, "nope")
    make_study(sqlite_engine, "s2", n_human=10, n_agent=10)
    with pytest.raises(NotFoundError, match="no label source"):
        load_study(sqlite_engine, "s2", labels="human:nobody", features=False)


def test_label_source_choice_prefers_adjudicated_then_human_with_coverage():
    cov = pd.DataFrame(
        [
            {"name": "llm:x", "kind": "llm", "tier": 2, "coverage": 1.0},
            {"name": "human:gold", "kind": "human", "tier": 1, "coverage": 0.05},
            {"name": "adjudicated", "kind": "adjudicated", "tier": 0, "coverage": 0.02},
        ]
    ).sort_values(["tier", "coverage"], ascending=[True, False])
    name, why = choose_label_source(cov)
    assert name == "llm:x" and "human:gold" in why and "adjudicated" in why
    cov.loc[cov["name"] == "human:gold", "coverage"] = 0.9
    assert choose_label_source(cov)[0] == "human:gold"
    assert choose_label_source(cov.iloc[0:0])[0] is None


def test_default_source_is_human_when_it_covers(sqlite_engine, pipelines):
    make_study(sqlite_engine, "two", n_human=30, n_agent=30, seed=3)
    make_study(sqlite_engine, "two-h", n_human=0, n_agent=0, label_source="human:alice")
    # Copy the labels as a second, human source: same conversations.
    with Session(sqlite_engine) as s:
        src = s.exec(
            __import__("sqlmodel").select(LabelSource).where(LabelSource.name == "human:alice")
        ).one()
        src.kind = "human"
        s.add(src)
        s.commit()
        rows = s.exec(
            __import__("sqlmodel").text(
                "SELECT conversation_id, dimension, value FROM label WHERE source_id != :s"
            ),
            params={"s": src.id},
        ).all()
        from db.models import Label

        for cid, dim, val in rows:
            s.add(Label(conversation_id=cid, dimension=dim, value=val, source_id=src.id))
        s.commit()
    data = load_study(sqlite_engine, "two", features=False)
    assert data.label_source == "human:alice" and "human" in data.label_source_reason


def test_paired_twins(sqlite_engine, pipelines):
    make_study(sqlite_engine, "twins", n_human=40, n_agent=40, twins=True, seed=4)
    data = load_study(sqlite_engine, "twins", pipelines=pipelines)
    from analysis.compare import analysis_frame

    units = matched_units_df(analysis_frame(data))
    assert units["unit"].nunique() == 40 and set(units["match"]) == {"twin"} and len(units) == 80
    comp = comparisons_df(data, n_boot=100)
    paired = comp[comp["slice_by"] == "paired"].set_index("dimension")
    assert paired.loc["politeness", "test"] == "mcnemar_bowker"
    assert paired.loc["question_broadness", "test"] == "wilcoxon_paired"
    assert paired.loc["politeness", "n_human"] == 40
    # Without twins, each condition with both kinds is one matched unit (12 conditions here).
    make_study(sqlite_engine, "conds", n_human=60, n_agent=60, seed=5)
    data = load_study(sqlite_engine, "conds", pipelines=pipelines)
    units = matched_units_df(analysis_frame(data))
    assert set(units["match"]) == {"condition"} and units["unit"].nunique() == 12
    comp = comparisons_df(data, n_boot=100)
    paired = comp[comp["slice_by"] == "paired"].set_index("dimension")
    assert paired.loc["question_broadness", "n_human"] == 12


def test_likeness_tables_and_classifier(sqlite_engine, pipelines):
    make_study(sqlite_engine, "like", n_human=120, n_agent=120, simulators=2, seed=5)
    data = load_study(sqlite_engine, "like", pipelines=pipelines)
    t = likeness_tables(data, n_boot=200)
    from scipy.spatial.distance import jensenshannon

    d = t["distances"]
    assert set(d["simulator"]) == {"sim-0", "sim-1"}
    row = d[(d["simulator"] == "sim-0") & (d["dimension"] == "politeness")].iloc[0]
    frame = data.conversations.merge(data.labels, on="conversation_id")
    h = frame[frame.user_kind == "human"]["politeness"].value_counts()
    a = frame[(frame.user_kind == "agent") & (frame.simulator == "sim-0")]["politeness"].value_counts()
    cats = sorted(set(h.index) | set(a.index))
    assert row["js_distance"] == pytest.approx(
        jensenshannon(h.reindex(cats, fill_value=0), a.reindex(cats, fill_value=0), base=2)
    )
    assert row["ci_low"] <= row["js_distance"] <= row["ci_high"]
    assert (
        0 <= row["js_null"] < row["js_distance"]
        and row["js_excess"] == pytest.approx(row["js_distance"] - row["js_null"])
        and 0 < row["p_value"] <= 1
    )
    r = t["ranking"]
    mine = d[d["simulator"] == r.iloc[0]["simulator"]]
    assert r.iloc[0]["human_likeness_index"] == pytest.approx(1 - mine["js_excess"].mean())
    assert r.iloc[0]["human_likeness_index_raw"] == pytest.approx(1 - mine["js_distance"].mean())
    assert list(r["rank"]) == [1, 2] and r["classifier_auc"].between(0.5, 1).all()
    f = t["failures"].set_index("population")
    assert f.loc["agent: sim-0", "positive_feedback_rate"] > f.loc["human", "positive_feedback_rate"]
    assert f.loc["agent: sim-0", "over_cooperation"] > f.loc["human", "over_cooperation"]


def test_classifier_auc_half_when_indistinguishable():
    rng = np.random.default_rng(0)
    h = pd.DataFrame({"n_turns": rng.normal(size=300), "mattr": rng.normal(size=300)})
    a = pd.DataFrame({"n_turns": rng.normal(size=300), "mattr": rng.normal(size=300)})
    res = classifier_auc(h, a)
    assert res["ci_low"] < 0.5 < res["ci_high"] or abs(res["auc"] - 0.5) < 0.06
    a["n_turns"] += 1
    res = classifier_auc(h, a)
    assert res["auc"] > 0.7
    # Same model and folds through scikit-learn directly: roc_auc_score of the out-of-fold scores.
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X = pd.concat([h, a])[res["features"]].to_numpy()
    y = np.r_[np.zeros(300), np.ones(300)]
    model = make_pipeline(
        SimpleImputer(strategy="median", keep_empty_features=True),
        StandardScaler(),
        LogisticRegression(max_iter=1000),
    )
    scores = cross_val_predict(
        model, X, y, cv=StratifiedKFold(5, shuffle=True, random_state=0), method="predict_proba"
    )[:, 1]
    assert res["auc"] == pytest.approx(roc_auc_score(y, scores))
    assert res["ci_low"] < res["auc"] < res["ci_high"]
    assert classifier_auc(h.iloc[:1], a)["auc"] is None
    # With participants, a person's conversations stay in one fold (StratifiedGroupKFold).
    from sklearn.model_selection import StratifiedGroupKFold

    people = [f"p{i % 20}" for i in range(300)]
    res_g = classifier_auc(h.assign(participant=people), a)
    assert "grouped by participant" in res_g["note"] and "grouped" not in res["note"]
    groups = np.r_[
        np.array(["p:" + p for p in people], dtype=object),
        np.array([f"a:{i}" for i in range(300)], dtype=object),
    ]
    scores_g = cross_val_predict(
        model,
        X,
        y,
        cv=StratifiedGroupKFold(5, shuffle=True, random_state=0),
        groups=groups,
        method="predict_proba",
    )[:, 1]
    assert res_g["auc"] == pytest.approx(roc_auc_score(y, scores_g))


def test_cli_analyze_and_report(use_db, tmp_path):
    from db.engine import get_engine
    from db.migrate import upgrade
    from workbench.cli import main

    engine = get_engine(use_db)
    upgrade(engine)
    make_study(engine, "cli", n_human=40, n_agent=40, seed=6)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        main(["analyze", "--study", "cli", "--out", str(out), "--n-boot", "200"])
    assert exc.value.code in (0, None)
    recs = json.loads((out / "comparisons.json").read_text())
    assert recs and list(recs[0])[: len(COLUMNS)] == COLUMNS
    csv = pd.read_csv(out / "comparisons.csv")
    assert list(csv.columns[: len(COLUMNS)]) == COLUMNS
    assert json.loads((out / "meta.json").read_text())["label_source"] == "llm:synthetic"
    assert (csv["label_source"] == "llm:synthetic").all()
    with pytest.raises(SystemExit) as exc:
        main(["analyze", "--study", "cli", "--out", str(out), "--correction", "bonferroni"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        main(["report", "--study", "cli", "--out", str(tmp_path / "r.html"), "--n-boot", "200"])
    assert exc.value.code in (0, None)
    assert (tmp_path / "r.html").stat().st_size > 100_000 and (tmp_path / "r.tex").exists()
    with pytest.raises(SystemExit) as exc:
        main(["analyze", "--study", "missing", "--out", str(out)])
    assert exc.value.code != 0
    with pytest.raises(SystemExit) as exc:  # not silently analysed as English
        main(["features", "--study", "cli", "--language", "fr"])
    assert exc.value.code == 2


def test_hallucination_flag_rate_from_live_flags_and_labels(sqlite_engine, pipelines):
    from sqlmodel import text as sql

    from db.models import Label

    sid = make_study(sqlite_engine, "hall", n_human=20, n_agent=20, seed=8)
    with Session(sqlite_engine) as s:
        # Humans flag live: every assistant turn "no", the first one of each conversation "yes".
        s.exec(
            sql(
                "UPDATE turn SET hallucination = CASE WHEN \"index\" = 1 THEN 'yes' ELSE 'no' END "
                "WHERE role = 'assistant' AND conversation_id IN "
                "(SELECT id FROM conversation WHERE user_kind = 'human' AND study_id = :s)"
            ),
            params={"s": sid},
        )
        src = LabelSource(name="imported:annotators", kind="imported")
        s.add(src)
        s.flush()
        agent_turns = s.exec(
            sql(
                'SELECT t.conversation_id, t."index" FROM turn t JOIN conversation c '
                "ON c.id = t.conversation_id WHERE c.user_kind = 'agent' AND c.study_id = :s "
                "AND t.role = 'assistant'"
            ),
            params={"s": sid},
        ).all()
        for cid, idx in agent_turns:
            s.add(
                Label(
                    conversation_id=cid,
                    turn_index=idx,
                    dimension="hallucination",
                    value="no",
                    source_id=src.id,
                )
            )
        s.commit()
    data = load_study(sqlite_engine, "hall", pipelines=pipelines)
    f = data.conversations[["conversation_id", "user_kind"]].merge(data.features, on="conversation_id")
    assert (f.loc[f.user_kind == "agent", "hallucination_flag_rate"] == 0).all()
    assert (f.loc[f.user_kind == "human", "hallucination_flag_rate"] > 0).all()
    comp = comparisons_df(data, n_boot=100)
    row = comp[(comp.dimension == "hallucination_flag_rate") & (comp.slice_by == "pooled")].iloc[0]
    assert "not the same measurement" in row["note"] and row["n_agent"] == 20


def _add_source(engine, name, kind, values, annotator=None, turn_values=None):
    """A label source with conversation-level ``values`` {(conv, dim): value} and turn-level
    ``turn_values`` {(conv, turn_index): hallucination value}."""
    from db.models import Annotator, Label

    with Session(engine) as s:
        ann_id = None
        if annotator:
            a = Annotator(name=annotator)
            s.add(a)
            s.flush()
            ann_id = a.id
        src = LabelSource(name=name, kind=kind, annotator_id=ann_id, params={})
        s.add(src)
        s.flush()
        for (conv, dim), v in values.items():
            s.add(Label(conversation_id=conv, dimension=dim, value=v, source_id=src.id))
        for (conv, idx), v in (turn_values or {}).items():
            s.add(
                Label(
                    conversation_id=conv, dimension="hallucination", turn_index=idx, value=v, source_id=src.id
                )
            )
        s.commit()


def test_default_source_is_the_annotators_consensus(sqlite_engine, pipelines):
    """Adjudicated labels cover only the items annotators disagreed on: the default source is the
    consensus (adjudicated, else the annotators' strict majority; ties left out), not the
    adjudicated source alone, which would analyse the hard cases only."""
    from analysis.dataset import CONSENSUS

    make_study(sqlite_engine, "cons", n_human=10, n_agent=10, seed=2, with_labels=False)
    with Session(sqlite_engine) as s:
        from sqlmodel import select

        from db.models import Conversation

        convs = s.exec(select(Conversation.id).order_by(Conversation.id)).all()
    a = {**{(c, "politeness"): "Polite" for c in convs}, **{(c, "formality"): "Formal" for c in convs}}
    b = dict(a)
    c3 = dict(a)
    b[(convs[0], "politeness")] = "Impolite"  # 1 vs 2: majority Polite
    b[(convs[1], "politeness")] = "Impolite"
    c3[(convs[1], "politeness")] = "Neutral"  # three different values: a tie
    b[(convs[2], "politeness")] = "Neutral"
    c3[(convs[2], "politeness")] = "Neutral"  # 2 vs 1: Neutral, but adjudicated Impolite below
    _add_source(sqlite_engine, "human:a", "human", a, annotator="a")
    _add_source(sqlite_engine, "human:b", "human", b, annotator="b")
    _add_source(sqlite_engine, "human:c", "human", c3, annotator="c")
    _add_source(sqlite_engine, "adjudicated:cons", "adjudicated", {(convs[2], "politeness"): "Impolite"})
    _add_source(sqlite_engine, "llm:one-dimension", "llm", {(c, "formality"): "Formal" for c in convs})
    data = load_study(sqlite_engine, "cons", pipelines=pipelines)
    assert data.label_source == CONSENSUS and "majority" in data.label_source_reason
    got = data.labels.set_index("conversation_id")["politeness"]
    assert got[convs[0]] == "Polite" and got[convs[2]] == "Impolite"
    assert convs[1] not in got.dropna().index  # a tie without adjudication: unlabelled
    assert (got.drop([convs[1], convs[2]]) == "Polite").all() and len(got.dropna()) == len(convs) - 1
    assert (data.labels["formality"] == "Formal").all()
    cov = pd.DataFrame(data.meta["label_sources"]).set_index("name")
    # coverage counts (conversation, dimension) cells: one dimension of the two labelled covers half
    assert cov.loc["llm:one-dimension", "coverage"] == pytest.approx(0.5)
    assert cov.loc["adjudicated:cons", "tier"] == 1 and cov.loc[CONSENSUS, "tier"] == 0
    explicit = load_study(sqlite_engine, "cons", labels="adjudicated:cons", features=False)
    assert explicit.labels["conversation_id"].tolist() == [convs[2]]  # still available by name
    assert load_study(sqlite_engine, "cons", labels=CONSENSUS, features=False).label_source == CONSENSUS
    # The row says how many conversations had no label (the tie) instead of shrinking n silently.
    import re

    comp = comparisons_df(data, n_boot=50, include_features=False)
    row = comp[(comp["dimension"] == "politeness") & (comp["slice_by"] == "pooled")].iloc[0]
    m = re.search(r"not labelled\): (\d+) human, (\d+) agent", row["note"])
    assert m and int(m.group(1)) + int(m.group(2)) == 1 and row["n_human"] + row["n_agent"] == len(convs) - 1
    formality = comp[(comp["dimension"] == "formality") & (comp["slice_by"] == "pooled")].iloc[0]
    assert "left out" not in formality["note"]
    # The report's agreement covers every pair of stored sources (not the derived consensus), and the
    # heatmap has a column per pair and user kind instead of showing one pair unnamed.
    from analysis.report import agreement_df

    agr, note = agreement_df(sqlite_engine, data, n_boot=100)
    pairs = set(zip(agr["source_a"], agr["source_b"]))
    assert note == "" and CONSENSUS not in {x for p in pairs for x in p}
    assert {("human:a", "human:b"), ("human:a", "human:c"), ("human:b", "human:c")} <= pairs
    fig = charts.agreement_heatmap_fig(agr)
    columns = list(fig.data[0].x)
    assert "human:a vs human:b: all" in columns and "human:b vs human:c: all" in columns
    assert (
        len(columns)
        == len(set(columns))
        == agr[["source_a", "source_b", "user_kind"]].drop_duplicates().shape[0]
    )


def test_source_labelling_one_dimension_is_not_chosen_and_unfinished_do_not_count(sqlite_engine):
    from sqlmodel import select

    from db.models import Conversation

    make_study(sqlite_engine, "cov", n_human=10, n_agent=10, seed=4)  # llm:synthetic labels every dimension
    with Session(sqlite_engine) as s:
        convs = s.exec(select(Conversation).order_by(Conversation.id)).all()
        ids = [c.id for c in convs]
        convs[0].status = "in_progress"
        s.add(convs[0])
        s.commit()
    _add_source(sqlite_engine, "llm:a-copy", "llm", {(c, "politeness"): "Polite" for c in ids})
    data = load_study(sqlite_engine, "cov", features=False)
    assert data.label_source == "llm:synthetic"
    cov = pd.DataFrame(data.meta["label_sources"]).set_index("name")
    assert cov["coverage_human"].max() <= 1 and cov["coverage_agent"].max() <= 1
    assert cov.loc["llm:synthetic", "coverage"] == pytest.approx(1.0)
    assert cov.loc["llm:a-copy", "coverage"] < 0.2


def test_hallucination_rates_read_one_source(sqlite_engine, pipelines):
    """Annotators flag every reply "no", a model flags every reply "yes": the rates come from one
    source (the human one here), never an average of the two."""
    from sqlmodel import select

    from db.models import Conversation, Turn

    make_study(sqlite_engine, "hall", n_human=6, n_agent=6, seed=5)
    with Session(sqlite_engine) as s:
        agent_ids = s.exec(select(Conversation.id).where(Conversation.user_kind == "agent")).all()
        replies = s.exec(
            select(Turn.conversation_id, Turn.index).where(
                Turn.role == "assistant", Turn.conversation_id.in_(agent_ids)
            )
        ).all()
    _add_source(
        sqlite_engine,
        "human:ann",
        "human",
        {},
        annotator="ann",
        turn_values={(c, i): "no" for c, i in replies},
    )
    _add_source(sqlite_engine, "llm:judge", "llm", {}, turn_values={(c, i): "yes" for c, i in replies})
    data = load_study(sqlite_engine, "hall", pipelines=pipelines)
    assert data.meta["hallucination_source"] == "human:ann"
    rates = data.features.set_index("conversation_id").loc[agent_ids, "hallucination_flag_rate"]
    assert (rates == 0.0).all()
    comp = comparisons_df(data, n_boot=100)
    notes = comp.loc[comp["dimension"] == "hallucination_flag_rate", "note"]
    assert notes.str.contains("turn labels: human:ann").all()


def test_small_groups_are_flagged(sqlite_engine, pipelines):
    make_study(sqlite_engine, "tiny", n_human=3, n_agent=3, n_participants=2, seed=2)
    comp = comparisons_df(load_study(sqlite_engine, "tiny", pipelines=pipelines), n_boot=50)
    tested = comp[comp["p_value"].notna()]
    assert len(tested) and tested["note"].str.contains("small group \\(fewer than 5\\)").all()
    clustered = tested[
        tested["test"].isin(["ols_cluster_robust", "wald_cluster_robust"])
        & tested["note"].str.contains("clusters:")
    ]  # not the constant ones (p = 1)
    assert len(clustered) and clustered["note"].str.contains("only 2 participants: unreliable").all()


def test_package_reexports_public_names_lazily():
    """``import analysis`` loads no submodule; every re-exported name resolves to its submodule's."""
    import subprocess
    import sys

    probe = "import sys, analysis; print(sorted(m for m in sys.modules if m.startswith('analysis.') or m == 'pandas'))"
    out = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert out.stdout.strip() == "[]"
    import importlib

    import analysis

    for name in analysis.__all__:
        module = importlib.import_module(f"analysis.{analysis._SOURCE[name]}")
        assert getattr(analysis, name) is getattr(module, name), name
    assert "make_study" not in analysis.__all__  # test support stays out
    with pytest.raises(AttributeError):
        analysis.no_such_name  # noqa: B018
