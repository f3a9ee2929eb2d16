"""Everything one analysis needs from a study, loaded once: conversations, the chosen labels (wide,
one column per dimension), features, and the dimension scales.

Example::

    data = load_study(engine, "recllmsim")              # default label source, features from the store
    data = load_study(engine, "recllmsim", labels="imported:recllmsim-human")
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
from sqlmodel import Session, select

from annotation.codebook import load_codebook
from db.errors import NotFoundError, UserInputError
from db.frames import read_frame
from db.models.core import UNFINISHED_STATUSES

# Preference of label sources when none is named: the annotators' consensus (adjudicated where they
# disagreed), then one human source, then model labels.
TIER_NAMES = {0: "annotators' consensus", 1: "human", 2: "model/imported"}
MIN_COVERAGE = 0.5  # a better-tier source is only chosen when it labels this share of each user kind
# Virtual source: per item the adjudicated label, else the value a strict majority of the study's
# annotators gave (ties stay unlabelled). Offered when there are two or more annotator sources or an
# adjudicated one; ``consensus_labels_frame``.
CONSENSUS = "consensus:annotators"


@dataclass
class StudyData:
    study_name: str
    study_id: int
    conversations: pd.DataFrame
    labels: pd.DataFrame  # conversation_id + one column per dimension (conversation-level labels)
    label_source: str | None
    label_source_reason: str
    features: pd.DataFrame
    scales: dict[str, tuple[str, list[str]]]
    feature_version: str | None = None
    codebook_version: str | None = None
    language: str | None = None
    meta: dict = field(default_factory=dict)

    @property
    def dimensions(self) -> list[str]:
        return [c for c in self.labels.columns if c != "conversation_id"]


def excluded_note(data: StudyData) -> str:
    """'' or a sentence saying which conversations the analysis leaves out (in progress, failed,
    stopped by a budget: ``UNFINISHED_STATUSES``)."""
    ex = data.meta.get("excluded") or {}
    if not ex:
        return ""
    parts = []
    for key, n in sorted(ex.items()):
        kind, status = key.split("_", 1)
        noun = "conversation" if n == 1 else "conversations"
        parts.append(
            f"{n} {kind} {noun} still in progress"
            if status == "in_progress"
            else f"{n} {kind} {noun} stopped by a simulation budget"
            if status == "stopped"
            else f"{n} failed {kind} {noun}"
        )
    return "Not analysed: " + ", ".join(parts) + "."


def codebook_scales(codebook=None) -> tuple[dict[str, tuple[str, list[str]]], str | None]:
    """Each codebook dimension's scale and ordered labels, and the codebook version (``codebook``
    default: the bundled one).

    Dimensions found in labels but missing from the codebook are still analysed (as nominal, with
    their categories in sorted order) by the callers."""
    cb = codebook if codebook is not None else load_codebook()
    return {d.name: (d.scale, [str(v) for v in d.labels]) for d in cb.dimensions}, str(cb.version)


def _tier(kind: str, params: dict) -> int:
    """1 for human judgements (an annotator, an adjudication, imported human labels), 2 for the rest.
    An adjudicated source alone covers only the items annotators disagreed on: it is a human source,
    not the consensus (tier 0, ``CONSENSUS``), which fills it in with the agreed labels."""
    params = params or {}
    if kind in ("human", "adjudicated") or params.get("human") or params.get("adjudicated"):
        return 1
    return 2


def _label_rows(engine, study_id: int, conversation_ids, where) -> pd.DataFrame:
    """source, kind, annotator_id, conversation_id, turn_index, dimension, value of the study's labels
    with status ok and a value, on ``conversation_ids``, filtered by ``where(label, source)``."""
    from sqlalchemy import select as core_select

    from db.models import Conversation, Label, LabelSource

    lab, src, conv = Label.__table__, LabelSource.__table__, Conversation.__table__
    q = (
        core_select(
            src.c.name,
            src.c.kind,
            src.c.annotator_id,
            lab.c.conversation_id,
            lab.c.turn_index,
            lab.c.dimension,
            lab.c.value,
        )
        .join(src, src.c.id == lab.c.source_id)
        .join(conv, conv.c.id == lab.c.conversation_id)
        .where(conv.c.study_id == study_id, lab.c.status == "ok", lab.c.value.is_not(None), where(lab, src))
    )
    cols = ["source", "kind", "annotator_id", "conversation_id", "turn_index", "dimension", "value"]
    with engine.connect() as c:
        out = read_frame(c, q, cols, shared=["source", "kind", "dimension", "value"])
    return out[out["conversation_id"].isin(set(conversation_ids))]


def _is_annotator(lab, src):
    from sqlalchemy import and_, or_

    return or_(src.c.kind == "adjudicated", and_(src.c.kind == "human", src.c.annotator_id.is_not(None)))


def consensus_of(rows: pd.DataFrame) -> pd.DataFrame:
    """Per item (conversation_id, turn_index, dimension) of annotator and adjudicated label rows: the
    adjudicated value if there is one, else the value a strict majority of the annotators gave; items
    with a tie and no adjudication are left out. Columns: conversation_id, turn_index, dimension, value."""
    cols = ["conversation_id", "turn_index", "dimension", "value"]
    if rows.empty:
        return pd.DataFrame(columns=cols)
    key = ["conversation_id", "turn_index", "dimension"]
    adj = rows[rows["kind"] == "adjudicated"].drop_duplicates(key, keep="last")[cols]
    ann = rows[rows["kind"] != "adjudicated"].astype({"value": str})
    counts = ann.groupby(key + ["value"]).size().rename("n").reset_index()
    counts["total"] = counts.groupby(key)["n"].transform("sum")
    major = counts[counts["n"] * 2 > counts["total"]][cols]
    major = major.merge(adj[key], on=key, how="left", indicator=True)
    major = major[major["_merge"] == "left_only"][cols]
    return pd.concat([adj, major], ignore_index=True).sort_values(key).reset_index(drop=True)


def consensus_labels_frame(engine, study_id: int, conversation_ids) -> pd.DataFrame:
    """The ``CONSENSUS`` source's conversation-level labels, in the columns of ``_labels_frame``."""
    rows = _label_rows(engine, study_id, conversation_ids, _is_annotator)
    rows = rows[rows["turn_index"] == -1]
    return consensus_of(rows).assign(status="ok")[
        ["conversation_id", "turn_index", "dimension", "value", "status"]
    ]


def label_sources_coverage_df(engine, study_id: int, conversations: pd.DataFrame) -> pd.DataFrame:
    """Each label source of the study (and ``CONSENSUS`` where there are two or more annotators or an
    adjudication) with its tier, the analysed conversations it labels per user kind (``human``,
    ``agent``), the number of dimensions, and its coverage: per user kind, the share of the
    (conversation, dimension) cells it labels, over the conversations analysed and the dimensions any
    source labels; ``coverage`` is the smaller of the two kinds. So a source that labels one
    dimension of every conversation covers little, and unfinished conversations do not count.
    ``conversations`` are the analysed ones (finished, people and simulated users): the labels are
    counted in the database, one row per source and conversation, never one per label."""
    cols = ["name", "kind", "tier", "human", "agent", "dimensions", "coverage_human", "coverage_agent"]
    cols.append("coverage")
    ids = conversations["conversation_id"]
    counts, dims = _coverage_counts(engine, study_id, ids)
    counts, dims = _with_consensus(engine, study_id, ids, counts, dims)
    if counts.empty:
        return pd.DataFrame(columns=cols)
    params = _source_params(engine, counts["source"].unique().tolist())
    counts["user_kind"] = counts["conversation_id"].map(
        conversations.set_index("conversation_id")["user_kind"]
    )
    totals = conversations["user_kind"].value_counts().to_dict()
    n_dims = max(len(set().union(*dims.values())), 1)
    out = []
    for (name, kind), g in counts.groupby(["source", "kind"], sort=False):
        r = {
            "name": name,
            "kind": kind,
            "dimensions": len(dims.get(name, ())),
            "tier": 0 if name == CONSENSUS else _tier(kind, params.get(name) or {}),
        }
        for uk in ("human", "agent"):
            gk = g[g["user_kind"] == uk]
            r[uk] = int(gk["conversation_id"].nunique())
            r[f"coverage_{uk}"] = int(gk["cells"].sum()) / (max(totals.get(uk, 0), 1) * n_dims)
        out.append(r)
    out = pd.DataFrame(out, columns=cols)
    out["coverage"] = out[["coverage_human", "coverage_agent"]].min(axis=1)
    return out.sort_values(["tier", "coverage", "name"], ascending=[True, False, True]).reset_index(drop=True)


def _analysed_labels(study_id: int):
    """(label, source, conversation tables, the filter for conversation-level labels with a value on
    the study's finished conversations of people and simulated users)."""
    from sqlalchemy import and_

    from db.models import Conversation, Label, LabelSource

    lab, src, conv = Label.__table__, LabelSource.__table__, Conversation.__table__
    where = and_(
        conv.c.study_id == study_id,
        conv.c.user_kind.in_(["human", "agent"]),
        conv.c.status.not_in(UNFINISHED_STATUSES),
        lab.c.status == "ok",
        lab.c.value.is_not(None),
        lab.c.turn_index == -1,
    )
    return lab, src, conv, where


def _coverage_counts(engine, study_id: int, ids) -> tuple[pd.DataFrame, dict]:
    """(per source and analysed conversation: the dimensions it labels there as ``cells``; per source:
    the set of dimensions it labels), counted in SQL."""
    from sqlalchemy import distinct, func
    from sqlalchemy import select as core_select

    lab, src, conv, where = _analysed_labels(study_id)
    per_conv = (
        core_select(
            src.c.name,
            src.c.kind,
            src.c.annotator_id,
            lab.c.conversation_id,
            func.count(distinct(lab.c.dimension)),
        )
        .join(src, src.c.id == lab.c.source_id)
        .join(conv, conv.c.id == lab.c.conversation_id)
        .where(where)
        .group_by(src.c.name, src.c.kind, src.c.annotator_id, lab.c.conversation_id)
    )
    per_source = (
        core_select(src.c.name, lab.c.dimension)
        .distinct()
        .join(src, src.c.id == lab.c.source_id)
        .join(conv, conv.c.id == lab.c.conversation_id)
        .where(where)
    )
    cols = ["source", "kind", "annotator_id", "conversation_id", "cells"]
    with engine.connect() as c:
        counts = read_frame(c, per_conv, cols, shared=["source", "kind"])
        dims: dict[str, set] = {}
        for name, dim in c.execute(per_source):
            dims.setdefault(name, set()).add(dim)
    return counts[counts["conversation_id"].isin(set(ids))].reset_index(drop=True), dims


def _with_consensus(
    engine, study_id: int, ids, counts: pd.DataFrame, dims: dict
) -> tuple[pd.DataFrame, dict]:
    """``counts`` and ``dims`` with the ``CONSENSUS`` source added where there are two or more
    annotators, or one and an adjudication (only the annotators' labels are read for it)."""
    annot = counts[(counts["kind"] == "human") & counts["annotator_id"].notna()]
    n_annot = annot["source"].nunique()
    if not (n_annot >= 2 or (n_annot >= 1 and (counts["kind"] == "adjudicated").any())):
        return counts, dims
    rows = _label_rows(
        engine, study_id, ids, lambda lab, src: _is_annotator(lab, src) & (lab.c.turn_index == -1)
    )
    rows = rows[rows["turn_index"] == -1].drop_duplicates(["source", "conversation_id", "dimension"])
    cons = consensus_of(rows)
    if cons.empty:
        return counts, dims
    cells = cons.groupby("conversation_id")["dimension"].nunique().rename("cells").reset_index()
    cells = cells.assign(source=CONSENSUS, kind="consensus", annotator_id=None)
    counts = pd.concat([counts, cells[counts.columns]], ignore_index=True)
    return counts, {**dims, CONSENSUS: set(cons["dimension"])}


def _source_params(engine, names: list[str]) -> dict:
    """Each named label source's ``params`` (for its tier)."""
    from db.models import LabelSource

    with Session(engine) as s:
        return dict(
            s.exec(select(LabelSource.name, LabelSource.params).where(LabelSource.name.in_(names))).all()
        )


def choose_label_source(coverage: pd.DataFrame) -> tuple[str | None, str]:
    """The best available source: the best tier (annotators' consensus, human, model) whose coverage
    of both user kinds is at least ``MIN_COVERAGE``; failing that, the source with the widest
    coverage (ties: the better tier, then the name)."""
    if coverage.empty:
        return None, "no conversation-level labels in this study"
    good = coverage[coverage["coverage"] >= MIN_COVERAGE]
    if not good.empty:
        best = good.iloc[0]
        skipped = coverage[(coverage["tier"] < best["tier"])]
        tier = TIER_NAMES[int(best["tier"])]
        why = f"best available ({tier}; covers {best['coverage']:.0%} of each user kind)"
        if best["name"] == CONSENSUS:
            why += "; per item the adjudicated label, else the annotators' majority label (ties left out)"
        if not skipped.empty:
            why += "; skipped for low coverage: " + ", ".join(
                f"{r.name} ({r.coverage:.0%})" for r in skipped.itertuples()
            )
        return str(best["name"]), why
    best = coverage.sort_values(["coverage", "tier", "name"], ascending=[False, True, True]).iloc[0]
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


def default_language(conversations: pd.DataFrame) -> str | None:
    """Analyse text in the humans' language when the two user kinds differ (the reference: humans
    wrote Chinese; agent turns carry Chinese translations), otherwise each in its own language."""
    langs = conversations.groupby("user_kind")["language"].agg(
        lambda s: s.mode().iloc[0] if len(s.mode()) else None
    )
    if "human" in langs and "agent" in langs and langs["human"] != langs["agent"]:
        return langs["human"]
    return None


def _labels_frame(engine, study_id: int, source: str | None) -> pd.DataFrame:
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
        return read_frame(conn, q, cols, shared=["dimension", "value", "status"])


def hallucination_source(engine, study_id: int, conversation_ids, chosen: str | None) -> str | None:
    """The one source whose turn-level "hallucination" labels the analysis reads: the chosen
    conversation-level source if it has them (``CONSENSUS``: the annotators' consensus per turn),
    else the human (then model) source that flags the most conversations. Sources are never mixed."""
    rows = _label_rows(
        engine,
        study_id,
        conversation_ids,
        lambda lab, src: (lab.c.dimension == "hallucination") & (lab.c.turn_index >= 0),
    )
    if rows.empty:
        return None
    if chosen == CONSENSUS and _is_annotator_rows(rows).any():
        return CONSENSUS
    if chosen in set(rows["source"]):
        return chosen
    n = rows.groupby(["source", "kind"])["conversation_id"].nunique().reset_index()
    n["tier"] = [_tier(k, {}) for k in n["kind"]]
    return str(
        n.sort_values(["tier", "conversation_id", "source"], ascending=[True, False, True]).iloc[0]["source"]
    )


def _is_annotator_rows(rows: pd.DataFrame) -> pd.Series:
    return (rows["kind"] == "adjudicated") | ((rows["kind"] == "human") & rows["annotator_id"].notna())


def hallucination_rates_df(
    engine, study_id: int, conversation_ids=None, source: str | None = None
) -> pd.DataFrame:
    """Share of assistant turns flagged as hallucinating, per conversation: the user's live flags
    (``Turn.hallucination``, "cant_tell" left out) where present, else the turn-level labels of
    dimension "hallucination" of one ``source`` (``hallucination_source``; ``CONSENSUS`` for the
    annotators' consensus per turn; None: no labels). In the reference data humans flagged live and
    annotators flagged agent conversations afterwards, so the two kinds are not measured the same
    way (the table says so)."""
    from sqlalchemy import select as core_select

    from db.models import Conversation, Turn

    conv, turn = Conversation.__table__, Turn.__table__
    q_live = (
        core_select(turn.c.conversation_id, turn.c.hallucination)
        .join(conv, conv.c.id == turn.c.conversation_id)
        .where(conv.c.study_id == study_id, turn.c.hallucination.in_(["yes", "no"]))
    )
    with engine.connect() as c:
        live = read_frame(c, q_live, ["conversation_id", "flag"], shared=["flag"])
    post = pd.DataFrame(columns=["conversation_id", "flag"])
    if source is not None:
        ids = conversation_ids if conversation_ids is not None else _study_conversation_ids(engine, study_id)
        rows = _label_rows(
            engine,
            study_id,
            ids,
            lambda lab, src: (lab.c.dimension == "hallucination") & (lab.c.turn_index >= 0),
        )
        if source == CONSENSUS:
            rows = consensus_of(rows[_is_annotator_rows(rows)])
        else:
            rows = rows[rows["source"] == source]
        post = rows.rename(columns={"value": "flag"})[["conversation_id", "flag"]]
        post = post[post["flag"].isin(["yes", "no"])]
    post = post[~post["conversation_id"].isin(live["conversation_id"])]
    both = pd.concat([live.assign(how="live"), post.assign(how="labels")], ignore_index=True)
    if both.empty:
        return pd.DataFrame(columns=["conversation_id", "hallucination_flag_rate"])
    rate = both.assign(y=both["flag"].eq("yes").astype(float)).groupby("conversation_id")["y"].mean()
    return rate.rename("hallucination_flag_rate").reset_index()


def _study_and_source(engine, study_name: str, labels: str | None):
    """The study, its finished conversations, what was left out (by kind and status), the label
    sources' coverage and the label source to use with the reason it was chosen."""
    from db.repo import conversations_df, get_label_source, get_study

    with Session(engine) as session:
        study = get_study(session, study_name)
        convs = conversations_df(session, study.id)
        convs = convs[convs["user_kind"].isin(["human", "agent"])]
        # A conversation still going on, or a simulation that failed, is not behaviour to compare;
        # completed and abandoned ones are (abandoning is itself an ending, see features.end_kind).
        unfinished = convs["status"].isin(UNFINISHED_STATUSES)
        excluded = {
            f"{kind}_{status}": int(n)
            for (kind, status), n in convs[unfinished].groupby(["user_kind", "status"]).size().items()
        }
        convs = convs[~unfinished].reset_index(drop=True)
        coverage = label_sources_coverage_df(engine, study.id, convs)
        if not labels:
            return (study, convs, excluded, coverage, *choose_label_source(coverage))
        if labels != CONSENSUS:
            get_label_source(session, labels)  # clear error for an unknown name
        if labels not in set(coverage["name"]):
            raise NotFoundError(
                f"label source {labels!r} has no conversation-level labels in study "
                f"{study_name!r} (sources with labels: {', '.join(coverage['name']) or 'none'})"
            )
        return study, convs, excluded, coverage, labels, "chosen explicitly"


def _labels_of(engine, study_id: int, convs: pd.DataFrame, source: str | None) -> pd.DataFrame:
    """The source's labels of ``convs``, one column per dimension."""
    ids = convs["conversation_id"]
    if source is not None and source != CONSENSUS:
        wide = _wide_labels_of_source(engine, study_id, source)
    else:
        frame = (
            consensus_labels_frame(engine, study_id, ids) if source else _labels_frame(engine, study_id, None)
        )
        wide = wide_labels_df(frame)
    return wide[wide["conversation_id"].isin(ids)].reset_index(drop=True)


def _wide_labels_of_source(engine, study_id: int, source: str) -> pd.DataFrame:
    """``wide_labels_df`` of one source's conversation-level labels, pivoted in the database (one
    row per conversation comes back, not one per label; a source has one value per cell)."""
    from sqlalchemy import case, func
    from sqlalchemy import select as core_select

    from db.models import Conversation, Label, LabelSource

    lab, src, conv = Label.__table__, LabelSource.__table__, Conversation.__table__
    where = (
        (conv.c.study_id == study_id)
        & (src.c.name == source)
        & (lab.c.turn_index == -1)
        & (lab.c.status == "ok")
        & lab.c.value.is_not(None)
    )
    joined = lab.join(src, src.c.id == lab.c.source_id).join(conv, conv.c.id == lab.c.conversation_id)
    with engine.connect() as c:
        dims = sorted(
            c.execute(core_select(lab.c.dimension).distinct().select_from(joined).where(where)).scalars()
        )
        if not dims:
            return pd.DataFrame({"conversation_id": pd.Series(dtype="int64")})
        values = [
            func.max(case((lab.c.dimension == d, lab.c.value))).label(f"d{i}") for i, d in enumerate(dims)
        ]
        q = (
            core_select(lab.c.conversation_id, *values)
            .select_from(joined)
            .where(where)
            .group_by(lab.c.conversation_id)
            .order_by(lab.c.conversation_id)
        )
        wide = read_frame(c, q, ["conversation_id", *dims], shared=dims)
    return wide.astype({"conversation_id": "int64"})


def _features_of(engine, study_id: int, convs: pd.DataFrame, source, pipelines, lang):
    """(features with the hallucination rates, feature version, hallucination source)."""
    from analysis.features import features_df

    ids = convs["conversation_id"]
    feats = features_df(engine, study_id, convs, pipelines=pipelines, language=lang)
    hall_source = hallucination_source(engine, study_id, ids, source)
    hall = hallucination_rates_df(engine, study_id, ids, hall_source)
    if len(hall):
        feats = feats.merge(hall, on="conversation_id", how="left")
    return feats, feats.attrs.get("feature_version"), hall_source


def _study_conversation_ids(engine, study_id: int) -> list[int]:
    from db.models import Conversation

    with Session(engine) as s:
        return list(s.exec(select(Conversation.id).where(Conversation.study_id == study_id)).all())


def load_study(
    engine,
    study_name: str,
    labels: str | None = None,
    features: bool = True,
    pipelines: dict | None = None,
    language: str | None = "auto",
    codebook=None,
) -> StudyData:
    """Load a study for analysis. ``labels``: a label source name (default: best available);
    ``language``: "auto" (see ``default_language``), None (each conversation in its own) or a code;
    ``codebook``: the dimensions' scales (default: the bundled codebook)."""
    if language not in (None, "auto") and not isinstance(language, str):
        raise UserInputError("language must be a language code, 'auto' or None")
    study, convs, excluded, coverage, source, reason = _study_and_source(engine, study_name, labels)
    wide = _labels_of(engine, study.id, convs, source)
    scales, cb_version = codebook_scales(codebook)
    for dim in wide.columns[1:]:
        if dim not in scales:
            scales[dim] = ("nominal", sorted(wide[dim].dropna().astype(str).unique()))
    lang = default_language(convs) if language == "auto" else language
    feats = pd.DataFrame({"conversation_id": convs["conversation_id"]})
    version, hall_source = None, None
    if features and len(convs):
        feats, version, hall_source = _features_of(engine, study.id, convs, source, pipelines, lang)
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
        meta={
            "label_sources": coverage.to_dict("records"),
            "excluded": excluded,
            "hallucination_source": hall_source,
        },
    )
