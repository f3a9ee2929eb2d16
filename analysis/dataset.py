"""Everything one analysis needs from a study, loaded once: conversations, the chosen labels (wide,
one column per dimension), features, and the dimension scales.

Example::

    data = load_study(engine, "recllmsim")              # default label source, features from the store
    data = load_study(engine, "recllmsim", labels="imported:recllmsim-human")
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import pandas as pd
from sqlmodel import Session, select

from annotation.codebook import load_codebook
from db.models.core import UNFINISHED_STATUSES
from workbench.errors import NotFoundError, UserInputError


# Preference of label sources when none is named: adjudicated, then human, then model labels.
TIER_NAMES = {0: "adjudicated", 1: "human", 2: "model/imported"}
MIN_COVERAGE = 0.5  # a better-tier source is only chosen when it labels this share of each user kind


@dataclass
class StudyData:
    study_name: str
    study_id: int
    conversations: pd.DataFrame
    labels: pd.DataFrame  # conversation_id + one column per dimension (conversation-level labels)
    label_source: Optional[str]
    label_source_reason: str
    features: pd.DataFrame
    scales: dict[str, tuple[str, list[str]]]
    feature_version: Optional[str] = None
    codebook_version: Optional[str] = None
    language: Optional[str] = None
    meta: dict = field(default_factory=dict)

    @property
    def dimensions(self) -> list[str]:
        return [c for c in self.labels.columns if c != "conversation_id"]


def excluded_note(data: "StudyData") -> str:
    """'' or a sentence saying which conversations the analysis leaves out (in progress, failed,
    stopped by a budget: ``UNFINISHED_STATUSES``)."""
    ex = data.meta.get("excluded") or {}
    if not ex:
        return ""
    parts = []
    for key, n in sorted(ex.items()):
        kind, status = key.split("_", 1)
        noun = "conversation" if n == 1 else "conversations"
        parts.append(f"{n} {kind} {noun} still in progress" if status == "in_progress"
                     else f"{n} {kind} {noun} stopped by a simulation budget" if status == "stopped"
                     else f"{n} failed {kind} {noun}")
    return "Not analysed: " + ", ".join(parts) + "."


def codebook_scales() -> tuple[dict[str, tuple[str, list[str]]], Optional[str]]:
    """Each codebook dimension's scale and ordered labels, and the codebook version.

    Dimensions found in labels but missing from the codebook are still analysed (as nominal, with
    their categories in sorted order) by the callers."""
    cb = load_codebook()
    return {d.name: (d.scale, [str(v) for v in d.labels]) for d in cb.dimensions}, str(cb.version)


def _tier(kind: str, params: dict) -> int:
    params = params or {}
    if kind == "adjudicated" or params.get("adjudicated"):
        return 0
    if kind == "human" or params.get("human"):
        return 1
    return 2


def label_sources_coverage_df(session: Session, study_id: int, conversations: pd.DataFrame) -> pd.DataFrame:
    """Each label source of the study with its tier and its coverage of human and agent conversations."""
    from sqlalchemy import distinct, func

    from db.models import Conversation, Label, LabelSource

    q = (
        select(
            LabelSource.name,
            LabelSource.kind,
            LabelSource.params,
            Conversation.user_kind,
            func.count(distinct(Label.conversation_id)),
        )
        .join(Label, Label.source_id == LabelSource.id)
        .join(Conversation, Conversation.id == Label.conversation_id)
        .where(Conversation.study_id == study_id, Label.turn_index == -1)
        .group_by(LabelSource.name, LabelSource.kind, LabelSource.params, Conversation.user_kind)
    )
    totals = conversations["user_kind"].value_counts().to_dict()
    rows: dict[str, dict] = {}
    for name, kind, params, user_kind, n in session.exec(q).all():
        r = rows.setdefault(
            name, {"name": name, "kind": kind, "tier": _tier(kind, params), "human": 0, "agent": 0}
        )
        if user_kind in ("human", "agent"):
            r[user_kind] = n
    out = pd.DataFrame(list(rows.values()), columns=["name", "kind", "tier", "human", "agent"])
    out["coverage_human"] = out["human"] / max(totals.get("human", 0), 1)
    out["coverage_agent"] = out["agent"] / max(totals.get("agent", 0), 1)
    out["coverage"] = out[["coverage_human", "coverage_agent"]].min(axis=1)
    return out.sort_values(["tier", "coverage"], ascending=[True, False]).reset_index(drop=True)


def choose_label_source(coverage: pd.DataFrame) -> tuple[Optional[str], str]:
    """The best available source: the best tier (adjudicated, human, model) whose coverage of both
    user kinds is at least ``MIN_COVERAGE``; failing that, the source with the widest coverage."""
    if coverage.empty:
        return None, "no conversation-level labels in this study"
    good = coverage[coverage["coverage"] >= MIN_COVERAGE]
    if not good.empty:
        best = good.iloc[0]
        skipped = coverage[(coverage["tier"] < best["tier"])]
        tier = TIER_NAMES[int(best["tier"])]
        why = f"best available ({tier}; covers {best['coverage']:.0%} of each user kind)"
        if not skipped.empty:
            why += "; skipped for low coverage: " + ", ".join(
                f"{r.name} ({r.coverage:.0%})" for r in skipped.itertuples()
            )
        return str(best["name"]), why
    best = coverage.sort_values("coverage", ascending=False).iloc[0]
    return str(best["name"]), f"widest coverage ({best['coverage']:.0%}); no source covers {MIN_COVERAGE:.0%}"


def wide_labels_df(labels: pd.DataFrame) -> pd.DataFrame:
    """Conversation-level labels (``db.repo.labels_df`` rows of one source) as one column per dimension."""
    lab = labels[
        (labels["turn_index"] == -1) & (labels["status"].fillna("ok") == "ok") & labels["value"].notna()
    ]
    if lab.empty:
        return pd.DataFrame({"conversation_id": pd.Series(dtype="int64")})
    wide = lab.pivot_table(index="conversation_id", columns="dimension", values="value", aggfunc="first")
    wide.columns.name = None
    return wide.reset_index().astype({"conversation_id": "int64"})


def default_language(conversations: pd.DataFrame) -> Optional[str]:
    """Analyse text in the humans' language when the two user kinds differ (the reference: humans
    wrote Chinese; agent turns carry Chinese translations), otherwise each in its own language."""
    langs = conversations.groupby("user_kind")["language"].agg(
        lambda s: s.mode().iloc[0] if len(s.mode()) else None
    )
    if "human" in langs and "agent" in langs and langs["human"] != langs["agent"]:
        return langs["human"]
    return None


def _labels_frame(engine, study_id: int, source: Optional[str]) -> pd.DataFrame:
    """Conversation-level labels of one source (the ``db.repo.labels_df`` columns analysis needs),
    read with one Core query: a large study has millions of labels."""
    from sqlalchemy import select as core_select

    from db.models import Conversation, Label, LabelSource

    cols = ["conversation_id", "turn_index", "dimension", "value", "status"]
    if source is None:
        return pd.DataFrame(columns=cols)
    lab = Label.__table__
    q = (
        core_select(lab.c.conversation_id, lab.c.turn_index, lab.c.dimension, lab.c.value, lab.c.status)
        .join(LabelSource.__table__, LabelSource.__table__.c.id == lab.c.source_id)
        .join(Conversation.__table__, Conversation.__table__.c.id == lab.c.conversation_id)
        .where(
            Conversation.__table__.c.study_id == study_id,
            LabelSource.__table__.c.name == source,
            lab.c.turn_index == -1,
        )
    )
    with engine.connect() as conn:
        return pd.DataFrame(conn.execute(q).all(), columns=cols)


def hallucination_rates_df(engine, study_id: int) -> pd.DataFrame:
    """Share of assistant turns flagged as hallucinating, per conversation: the user's live flags
    (``Turn.hallucination``, "cant_tell" left out) where present, else turn-level labels of dimension
    "hallucination". In the reference data humans flagged live and annotators flagged agent
    conversations afterwards, so the two kinds are not measured the same way (the table says so)."""
    from sqlalchemy import select as core_select

    from db.models import Conversation, Label, Turn

    conv, turn, lab = Conversation.__table__, Turn.__table__, Label.__table__
    q_live = (
        core_select(turn.c.conversation_id, turn.c.hallucination)
        .join(conv, conv.c.id == turn.c.conversation_id)
        .where(conv.c.study_id == study_id, turn.c.hallucination.in_(["yes", "no"]))
    )
    q_lab = (
        core_select(lab.c.conversation_id, lab.c.value)
        .join(conv, conv.c.id == lab.c.conversation_id)
        .where(
            conv.c.study_id == study_id,
            lab.c.dimension == "hallucination",
            lab.c.turn_index >= 0,
            lab.c.value.in_(["yes", "no"]),
        )
    )
    with engine.connect() as c:
        live = pd.DataFrame(c.execute(q_live).all(), columns=["conversation_id", "flag"])
        post = pd.DataFrame(c.execute(q_lab).all(), columns=["conversation_id", "flag"])
    post = post[~post["conversation_id"].isin(live["conversation_id"])]
    both = pd.concat([live.assign(how="live"), post.assign(how="labels")], ignore_index=True)
    if both.empty:
        return pd.DataFrame(columns=["conversation_id", "hallucination_flag_rate"])
    rate = both.assign(y=both["flag"].eq("yes").astype(float)).groupby("conversation_id")["y"].mean()
    return rate.rename("hallucination_flag_rate").reset_index()


def load_study(
    engine,
    study_name: str,
    labels: Optional[str] = None,
    features: bool = True,
    pipelines: Optional[dict] = None,
    language: Optional[str] = "auto",
) -> StudyData:
    """Load a study for analysis. ``labels``: a label source name (default: best available);
    ``language``: "auto" (see ``default_language``), None (each conversation in its own) or a code."""
    from db.repo import conversations_df, get_label_source, get_study

    with Session(engine) as session:
        study = get_study(session, study_name)
        convs = conversations_df(session, study.id)
        convs = convs[convs["user_kind"].isin(["human", "agent"])]
        # A conversation still going on, or a simulation that failed, is not behaviour to compare;
        # completed and abandoned ones are (abandoning is itself an ending, see features.end_kind).
        unfinished = convs["status"].isin(UNFINISHED_STATUSES)
        excluded = {f"{kind}_{status}": int(n) for (kind, status), n in
                    convs[unfinished].groupby(["user_kind", "status"]).size().items()}
        convs = convs[~unfinished].reset_index(drop=True)
        coverage = label_sources_coverage_df(session, study.id, convs)
        if labels:
            get_label_source(session, labels)  # clear error for an unknown name
            if labels not in set(coverage["name"]):
                raise NotFoundError(
                    f"label source {labels!r} has no conversation-level labels in study "
                    f"{study_name!r} (sources with labels: {', '.join(coverage['name']) or 'none'})"
                )
            source, reason = labels, "chosen explicitly"
        else:
            source, reason = choose_label_source(coverage)
    wide = wide_labels_df(_labels_frame(engine, study.id, source))
    wide = wide[wide["conversation_id"].isin(convs["conversation_id"])].reset_index(drop=True)
    scales, cb_version = codebook_scales()
    for dim in wide.columns[1:]:
        if dim not in scales:
            scales[dim] = ("nominal", sorted(wide[dim].dropna().astype(str).unique()))
    lang = default_language(convs) if language == "auto" else language
    if language not in (None, "auto") and not isinstance(language, str):
        raise UserInputError("language must be a language code, 'auto' or None")
    feats = pd.DataFrame({"conversation_id": convs["conversation_id"]})
    version = None
    if features and len(convs):
        from analysis.features import features_df

        feats = features_df(engine, study.id, convs, pipelines=pipelines, language=lang)
        version = feats.attrs.get("feature_version")
        hall = hallucination_rates_df(engine, study.id)
        if len(hall):
            feats = feats.merge(hall, on="conversation_id", how="left")
    return StudyData(
        study_name=study_name,
        study_id=study.id,
        conversations=convs,
        labels=wide,
        label_source=source,
        label_source_reason=reason,
        features=feats,
        scales=scales,
        feature_version=version,
        codebook_version=cb_version,
        language=lang,
        meta={"label_sources": coverage.to_dict("records"), "excluded": excluded},
    )
