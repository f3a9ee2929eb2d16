"""The participants' instruments, people against simulated users: the per-reply answers (satisfaction
1-5, "was information made up?" yes / no / cant_tell) and the post-task questionnaire, whoever gave
them (a person live, or the simulated user in role, ``Turn.meta["rated_by"] = "simulator"``).

Three results:

- comparison rows (``analysis.compare.ALL_COLUMNS``, ``kind`` "instrument") that join the comparison
  table: per-reply satisfaction (the conversation's mean, pooled, per scenario and per simulator;
  and the rating of the k-th reply, one value per conversation, as an ordinal 1-5), the share of
  answered replies flagged as made up (per conversation: "yes" over yes / no / cant_tell), and
  every post-task item found in the data (``item_scales``: numeric and Likert items ordinal,
  ``ORDERED_ITEMS`` ordinal in their listed order, other choice items nominal, free text left
  out). The tests are those of the label rows (``analysis.compare.SCALES``): conversation-level,
  and clustered by participant (each simulated conversation its own cluster), with the same effect
  sizes. They form their own multiple-comparison families (``instruments:<family>``), so adding
  them leaves the label rows' adjusted p-values unchanged;
- ``survey_mae`` fidelity records (``analysis.fidelity.RECORD_COLUMNS``): the mean absolute error of
  the simulator's post-task answers against people's on the same conditions, beside the human
  ceiling (people split in halves by participant, ``fidelity.participant_halves``);
- per-reply alignment on twins: a simulated conversation that is the digital twin of a person's
  (``Conversation.twin_of_id``) rates the same reply positions; quadratic weighted kappa and
  Krippendorff's ordinal alpha of the pairs (``annotation.agreement``, which equal sklearn's
  ``cohen_kappa_score(weights="quadratic")`` and the ``krippendorff`` package; tested).

survey_mae, the survey component of the User-Sim Index (Zhou et al. 2026, arXiv 2603.11245: the
error of the simulated user's post-interaction survey answers against people's on the same tasks;
its open code, github harshita-chopra/persona-policies, implements the behavioural fingerprint but
not the survey term, so the definition follows the paper's description): every answer is scored on
[0, 1] (ordinal: its position / (levels - 1); numeric: (x - low) / (high - low)); for each item and
each condition both populations answered (the simulated twin of a person's conversation counts
under the person's condition; without any shared condition, the cell is scenario x assistant, as
the note says), the absolute difference of the two mean scores (nominal items: the total variation
distance of the answer shares, also in [0, 1]); the item's error is the mean over its conditions,
``survey_mae`` the mean over items (group "survey"; one record per item, group "item:<name>").
0 = the simulator answers as people do.

Example::

    inst = load_instruments(engine, data)                  # frames of one loaded study
    rows = instrument_comparisons_df(inst)                  # join the comparison table
    records = instrument_records(inst, splits=20)           # survey_mae + twin alignment
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis import stats
from analysis.compare import ALL_COLUMNS, SCALES, _slices, _tests_for, family_name
from analysis.fidelity import (
    DEFAULT_BOOT,
    DEFAULT_SPLITS,
    RECORD_COLUMNS,
    _populations,
    calibrate,
    cluster_resample,
    participant_halves,
)
from db.frames import read_frame

SATISFACTION = "satisfaction"
MADE_UP = "made_up_share"
ITEM_PREFIX = "post_task:"
SATISFACTION_LEVELS = ["1", "2", "3", "4", "5"]
# Choice items whose options are ordered (worst / least first): the reference questionnaire's.
# Numeric and Likert items need no entry; an item not listed here and not numeric is nominal.
ORDERED_ITEMS: dict[str, list[str]] = {
    "Availability": ["unusable", "somewhat", "very_useful"],
    "Detail": ["brief", "average", "detailed"],
    "Diversity": ["single", "average", "diverse"],
}
MAX_CATEGORIES = 12  # a non-numeric item with more distinct answers is free text: not compared
MAX_POSITIONS = 10  # satisfaction by reply position: at most the first 10 replies
MIN_AT_POSITION = 5  # a reply position is compared when each kind has this many ratings there
INSTRUMENT_FAMILY = "instruments"
TITLES = {
    SATISFACTION: "Satisfaction with the replies (1-5, mean per conversation)",
    MADE_UP: "Replies flagged as made up (share)",
}
SLICE_TITLES = {"reply_position": "reply", "simulator_reply_position": "simulator, reply"}


@dataclass(frozen=True)
class ItemScale:
    """How a post-task item is compared and scored: ``scale`` ordinal | continuous | nominal,
    ``categories`` in order (ordinal and nominal), ``low``/``high`` (continuous)."""

    name: str
    scale: str
    categories: list[str] = field(default_factory=list)
    low: float = 0.0
    high: float = 1.0

    def score(self, values: pd.Series) -> pd.Series:
        """Answers on [0, 1] (NaN outside the scale); nominal items have no score."""
        if self.scale == "ordinal":
            pos = {c: i for i, c in enumerate(self.categories)}
            return values.astype(str).map(pos).astype(float) / max(len(self.categories) - 1, 1)
        if self.scale == "continuous":
            x = pd.to_numeric(values, errors="coerce").astype(float)
            return (x - self.low) / (self.high - self.low) if self.high > self.low else x * 0.0
        return pd.Series(np.nan, index=values.index)


@dataclass
class Instruments:
    """One study's instruments. ``conversations``: one row per conversation with its population
    columns (user_kind, population, cluster, participant, scenario, condition_id, twin_of_id,
    assistant), ``satisfaction`` (its mean rating), ``made_up_share`` and one column per item
    (``post_task:<item>``); ``replies``: conversation_id, reply_position (1 = the first assistant
    reply), satisfaction, hallucination; ``items``: item -> ``ItemScale``; ``notes``: what was left out."""

    conversations: pd.DataFrame
    replies: pd.DataFrame
    items: dict[str, ItemScale]
    notes: list[str] = field(default_factory=list)

    @property
    def has_ratings(self) -> bool:
        return bool(self.replies["satisfaction"].notna().any() or self.replies["hallucination"].notna().any())


# --------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------


def reply_answers_df(engine, study_id: int, conversation_ids) -> pd.DataFrame:
    """Every assistant reply of the conversations: conversation_id, reply_position (1-based among
    the conversation's assistant turns), satisfaction, hallucination (as stored on the turn)."""
    from sqlalchemy import select

    from db.models import Conversation, Turn

    conv, turn = Conversation.__table__, Turn.__table__
    q = (
        select(turn.c.conversation_id, turn.c.index, turn.c.satisfaction, turn.c.hallucination)
        .join(conv, conv.c.id == turn.c.conversation_id)
        .where(conv.c.study_id == study_id, turn.c.role == "assistant")
    )
    cols = ["conversation_id", "index", "satisfaction", "hallucination"]
    with engine.connect() as c:
        df = read_frame(c, q, cols, shared=["hallucination"])
    df = df[df["conversation_id"].isin(set(conversation_ids))].sort_values(["conversation_id", "index"])
    df["reply_position"] = df.groupby("conversation_id").cumcount() + 1
    df["satisfaction"] = pd.to_numeric(df["satisfaction"], errors="coerce")
    return df.drop(columns="index").reset_index(drop=True)


def post_task_df(engine, conversation_ids) -> pd.DataFrame:
    """The post-task answers given in the conversations: conversation_id, item, value."""
    from sqlalchemy import select

    from db.models import QuestionnaireResponse

    qr = QuestionnaireResponse.__table__
    ids = [int(i) for i in conversation_ids]
    rows = []
    with engine.connect() as c:
        for i in range(0, len(ids), 5000):
            q = select(qr.c.conversation_id, qr.c.item, qr.c.value).where(
                qr.c.questionnaire == "post_task", qr.c.conversation_id.in_(ids[i : i + 5000])
            )
            rows += c.execute(q).all()
    df = pd.DataFrame(rows, columns=["conversation_id", "item", "value"])
    return df[df["value"].notna() & (df["value"].astype(str) != "")]


def item_definitions(engine, study_id: int) -> dict[str, dict]:
    """item -> its definition in the study's stored questionnaires (``settings["questionnaires"]
    ["post_task"]``), where the study has them (an imported study has none)."""
    from sqlmodel import Session

    from db.models import Study

    with Session(engine) as s:
        study = s.get(Study, study_id)
        settings = (study.settings or {}) if study else {}
    items = ((settings.get("questionnaires") or {}).get("post_task")) or []
    return {it["name"]: it for it in items if isinstance(it, dict) and "name" in it}


def _numeric(values: pd.Series) -> pd.Series:
    return pd.to_numeric(values, errors="coerce")


def item_scale(name: str, values: pd.Series, definition: dict | None = None) -> ItemScale | None:
    """How an item found in the data is compared (None: free text or an attention check, left out):
    the study's definition first (Likert: its scale; number: its bounds; text: left out), then
    ``ORDERED_ITEMS``, then the answers themselves (all numbers: ordinal when they are at most 11
    whole numbers, else continuous; few distinct answers: nominal)."""
    d = definition or {}
    kind = d.get("type")
    if kind in ("text", "attention", "checkbox"):
        return None
    values = values.astype(str)
    seen = sorted(values.unique())
    if kind == "likert" and d.get("scale"):
        low, high = (int(x) for x in d["scale"])
        return ItemScale(name, "ordinal", [str(k) for k in range(low, high + 1)])
    if name in ORDERED_ITEMS and set(seen) <= set(ORDERED_ITEMS[name]):
        return ItemScale(name, "ordinal", list(ORDERED_ITEMS[name]))
    num = _numeric(values)
    if num.notna().all():
        whole = bool((num == num.round()).all())
        if whole and num.nunique() <= 11:
            low = int(d["min"]) if d.get("min") is not None else int(num.min())
            high = int(d["max"]) if d.get("max") is not None else int(num.max())
            return ItemScale(name, "ordinal", [str(k) for k in range(low, high + 1)])
        low = float(d["min"]) if d.get("min") is not None else float(num.min())
        high = float(d["max"]) if d.get("max") is not None else float(num.max())
        return ItemScale(name, "continuous", low=low, high=high)
    if len(seen) > MAX_CATEGORIES:
        return None
    options = [o["value"] for o in d.get("options") or [] if isinstance(o, dict)]
    return ItemScale(
        name, "nominal", [o for o in options if o in seen] + [v for v in seen if v not in options]
    )


def item_scales(
    answers: pd.DataFrame, definitions: dict | None = None
) -> tuple[dict[str, ItemScale], list[str]]:
    """Every item in ``answers`` with its scale, and notes on the items left out."""
    out, left = {}, []
    for name, g in answers.groupby("item", sort=True):
        sc = item_scale(str(name), g["value"], (definitions or {}).get(name))
        if sc is None:
            left.append(str(name))
        else:
            out[str(name)] = sc
    notes = [f"post-task items not compared (free text or checks): {', '.join(left)}"] if left else []
    return out, notes


def build_instruments(
    conversations: pd.DataFrame,
    replies: pd.DataFrame,
    answers: pd.DataFrame,
    definitions: dict | None = None,
) -> Instruments:
    """The pure part: frames in (``conversations`` as ``analysis.dataset.StudyData.conversations``,
    ``replies`` as ``reply_answers_df``, ``answers`` as ``post_task_df``), ``Instruments`` out."""
    convs = conversations[conversations["user_kind"].isin(["human", "agent"])].reset_index(drop=True)
    pops = _populations(convs)
    frame = convs[
        [
            c
            for c in ("conversation_id", "user_kind", "participant", "scenario", "condition_id")
            + ("twin_of_id", "assistant_config_id", "assistant_model", "simulator")
            if c in convs.columns
        ]
    ].copy()
    frame["population"], frame["cluster"] = pops["population"].to_numpy(), pops["cluster"].to_numpy()
    frame["assistant"] = _assistant_names(frame)
    rep = replies[replies["conversation_id"].isin(frame["conversation_id"])].copy()
    sat = rep.dropna(subset=["satisfaction"]).groupby("conversation_id")["satisfaction"].mean()
    flags = rep[rep["hallucination"].isin(["yes", "no", "cant_tell"])]
    made_up = (
        flags.assign(y=flags["hallucination"].eq("yes").astype(float)).groupby("conversation_id")["y"].mean()
    )
    frame[SATISFACTION] = frame["conversation_id"].map(sat)
    frame[MADE_UP] = frame["conversation_id"].map(made_up)
    answers = answers[answers["conversation_id"].isin(frame["conversation_id"])]
    items, notes = item_scales(answers, definitions)
    wide = answers[answers["item"].isin(items)].drop_duplicates(["conversation_id", "item"], keep="last")
    for name in items:
        col = wide[wide["item"] == name].set_index("conversation_id")["value"].astype(str)
        frame[ITEM_PREFIX + name] = frame["conversation_id"].map(col)
    return Instruments(frame, rep.reset_index(drop=True), items, notes)


def _assistant_names(frame: pd.DataFrame) -> pd.Series:
    """A readable name per assistant configuration: its model, with the configuration id where two
    configurations share a model."""
    if "assistant_config_id" not in frame.columns:
        return pd.Series("assistant", index=frame.index)
    model = frame.get("assistant_model", pd.Series(None, index=frame.index)).fillna("assistant").astype(str)
    ids = frame["assistant_config_id"]
    shared = model.groupby(model).transform(lambda s: ids.loc[s.index].nunique() > 1)
    return model.where(~shared, model + " #" + ids.astype(str))


def load_instruments(engine, data) -> Instruments:
    """The instruments of a loaded study (``analysis.dataset.StudyData``)."""
    ids = data.conversations["conversation_id"]
    return build_instruments(
        data.conversations,
        reply_answers_df(engine, data.study_id, ids),
        post_task_df(engine, ids),
        item_definitions(engine, data.study_id),
    )


# --------------------------------------------------------------------------------------------------
# Comparison rows
# --------------------------------------------------------------------------------------------------


def _variables(inst: Instruments) -> list[tuple[str, str, list]]:
    """(column, scale, categories) of every conversation-level instrument with data on both sides."""
    out = []
    for col, scale, cats in [(SATISFACTION, "continuous", []), (MADE_UP, "continuous", [])] + [
        (ITEM_PREFIX + n, s.scale, s.categories) for n, s in inst.items.items()
    ]:
        kinds = set(inst.conversations.loc[inst.conversations[col].notna(), "user_kind"])
        if {"human", "agent"} <= kinds:
            out.append((col, scale, cats))
    return out


def _position_frames(inst: Instruments) -> list[tuple[str, str, pd.DataFrame]]:
    """(slice_by, slice, frame of one rating per conversation at that reply position), for the
    first ``MAX_POSITIONS`` positions where both kinds have ``MIN_AT_POSITION`` ratings; per
    simulator as well when there are several."""
    rep = inst.replies.dropna(subset=["satisfaction"])
    rep = rep[rep["reply_position"] <= MAX_POSITIONS]
    conv = inst.conversations.drop(columns=[SATISFACTION])
    rep = rep.merge(conv, on="conversation_id")
    rep[SATISFACTION] = rep["satisfaction"].round().astype(int).astype(str)
    sims = sorted(rep.loc[rep["user_kind"] == "agent", "population"].unique())
    out = []
    for k, g in rep.groupby("reply_position", sort=True):
        groups = [("reply_position", str(k), g)]
        if len(sims) > 1:
            hum = g[g["user_kind"] == "human"]
            groups += [
                ("simulator_reply_position", f"{s}: {k}", pd.concat([hum, g[g["population"] == s]]))
                for s in sims
            ]
        for slice_by, name, frame in groups:
            n = frame["user_kind"].value_counts()
            if n.get("human", 0) >= MIN_AT_POSITION and n.get("agent", 0) >= MIN_AT_POSITION:
                out.append((slice_by, name, frame))
    return out


def _rows(variable, scale, cats, hum, age, n_boot, ci, thresholds) -> list[dict]:
    return _tests_for(variable, "instrument", scale, cats, hum, age, n_boot, ci, thresholds)


def instrument_comparisons_df(
    inst: Instruments,
    correction: str = "holm",
    n_boot: int = stats.DEFAULT_BOOT,
    ci: float = stats.DEFAULT_CI,
) -> pd.DataFrame:
    """The instrument rows of the comparison table (``analysis.compare.ALL_COLUMNS``): pooled, per
    scenario and per simulator (several), and satisfaction by reply position; p adjusted within
    each ``instruments:<family>``."""
    frame = inst.conversations
    variables = _variables(inst)
    alpha = 1 - ci
    thresholds = (alpha, alpha / max(1, len(variables) + 1))
    rows: list[dict] = []
    if variables:
        for slice_by, slice_name, scenario, hum, age in _slices(frame, ("scenario", "simulator")):
            for name, scale, cats in variables:
                for r in _rows(name, scale, cats, hum, age, n_boot, ci, thresholds):
                    rows.append(_placed(r, slice_by, slice_name, scenario, scale))
    for slice_by, slice_name, g in _position_frames(inst):
        hum, age = g[g["user_kind"] == "human"], g[g["user_kind"] == "agent"]
        for r in _rows(SATISFACTION, "ordinal", SATISFACTION_LEVELS, hum, age, n_boot, ci, thresholds):
            r["note"] = "; ".join(
                x for x in ("the rating of this reply, one per conversation", r["note"]) if x
            )
            rows.append(_placed(r, slice_by, slice_name, "all", "ordinal"))
    out = pd.DataFrame(rows, columns=ALL_COLUMNS)
    out["p_adjusted"] = None
    for _fam, idx in out.groupby("family", sort=False).groups.items():
        out.loc[idx, "p_adjusted"] = stats.adjust_p(out.loc[idx, "p_value"].tolist(), correction)
    out["p_adjusted"] = out["p_adjusted"].astype(float)
    out["label_source"] = "participants' instruments"
    out["correction"] = correction
    out["note"] = out["note"].fillna("")
    return out


def _placed(r: dict, slice_by: str, slice_name: str, scenario: str, scale: str) -> dict:
    role = r.pop("role")
    r.update(scenario=scenario, slice_by=slice_by, slice=slice_name)
    fam = family_name(slice_by, slice_name, role, role == SCALES[scale].recommended)
    r["family"] = f"{INSTRUMENT_FAMILY}:{fam}"
    return r


def instrument_titles(inst: Instruments | None) -> dict[str, str]:
    """Readable names of the instrument rows' dimensions."""
    out = dict(TITLES)
    for name in inst.items if inst is not None else {}:
        out[ITEM_PREFIX + name] = f"Post-task: {name.replace('_', ' ')}"
    return out


def satisfaction_by_position_df(inst: Instruments) -> pd.DataFrame:
    """population x reply position: mean satisfaction, its 95% t-interval and n (for the chart)."""
    from scipy import stats as st

    rep = inst.replies.dropna(subset=["satisfaction"]).merge(
        inst.conversations[["conversation_id", "population"]], on="conversation_id"
    )
    rep = rep[rep["reply_position"] <= MAX_POSITIONS]
    rows = []
    for (pop, k), g in rep.groupby(["population", "reply_position"], sort=True):
        x = g["satisfaction"].to_numpy(float)
        half = float(st.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x))) if len(x) > 1 else np.nan
        m = float(x.mean())
        rows.append(
            {
                "population": pop,
                "reply_position": int(k),
                "mean": m,
                "ci_low": m - half,
                "ci_high": m + half,
                "n": len(x),
            }
        )
    return pd.DataFrame(rows, columns=["population", "reply_position", "mean", "ci_low", "ci_high", "n"])


# --------------------------------------------------------------------------------------------------
# survey_mae and twin alignment: fidelity records
# --------------------------------------------------------------------------------------------------


def record(simulator, metric: str, group: str, value=None, direction: str = "lower", **kw) -> dict:
    """One fidelity record (``RECORD_COLUMNS``) with the rest empty."""
    rec = dict.fromkeys(RECORD_COLUMNS)
    rec.update(
        simulator=simulator,
        metric=metric,
        group=group,
        value=value,
        direction=direction,
        note="",
        n_splits=0,
        embedding="",
    )
    rec.update(kw)
    return rec


def _cells(frame: pd.DataFrame) -> tuple[pd.Series, str]:
    """The matching cell of every conversation: its condition (a twin: its person's condition), or
    scenario x assistant when no condition has both populations."""
    cond = frame["condition_id"].astype("Int64")
    if "twin_of_id" in frame.columns:
        twin_cond = frame["twin_of_id"].map(frame.set_index("conversation_id")["condition_id"])
        cond = cond.where(twin_cond.isna(), twin_cond.astype("Int64"))
    kinds = frame.groupby(cond)["user_kind"].nunique()
    if (kinds == 2).any():
        return cond.astype(str), "conditions"
    return frame["scenario"].astype(str) + " | " + frame["assistant"].astype(str), "scenario x assistant"


@dataclass(frozen=True)
class _Coded:
    """One item's answers as arrays aligned with the conversations: ``valid`` (answered), ``x``
    (n x k: the score as one column, or the one-hot answer of a nominal item), ``nominal``."""

    valid: np.ndarray
    x: np.ndarray
    nominal: bool


def coded_items(frame: pd.DataFrame, items: dict[str, ItemScale]) -> dict[str, _Coded]:
    out = {}
    for name, sc in items.items():
        col = frame[ITEM_PREFIX + name]
        if sc.scale == "nominal":
            codes = pd.Categorical(col, categories=sc.categories).codes
            x = np.zeros((len(col), len(sc.categories)))
            ok = codes >= 0
            x[np.flatnonzero(ok), codes[ok]] = 1.0
            out[name] = _Coded(ok, x, True)
        else:
            score = sc.score(col).to_numpy(float)
            out[name] = _Coded(~np.isnan(score), np.nan_to_num(score)[:, None], False)
    return out


def item_errors(
    coded: dict[str, _Coded], cells: np.ndarray, n_cells: int, a: np.ndarray, b: np.ndarray
) -> dict:
    """item -> mean over the cells both ``a`` and ``b`` (row indices, repeats allowed) answered of
    |mean score a - mean score b| (nominal: the total variation distance of the answer shares)."""
    out = {}
    for name, c in coded.items():
        means = []
        for idx in (a, b):
            idx = idx[c.valid[idx]]
            n = np.bincount(cells[idx], minlength=n_cells)
            sums = np.stack(
                [
                    np.bincount(cells[idx], weights=c.x[idx, j], minlength=n_cells)
                    for j in range(c.x.shape[1])
                ],
                1,
            )
            means.append((n, sums / np.maximum(n, 1)[:, None]))
        shared = (means[0][0] > 0) & (means[1][0] > 0)
        if not shared.any():
            continue
        diff = np.abs(means[0][1][shared] - means[1][1][shared]).sum(axis=1)
        out[name] = float(np.mean(0.5 * diff if c.nominal else diff))
    return out


def _mae(errors: dict) -> float | None:
    return float(np.mean(list(errors.values()))) if errors else None


def survey_mae_records(
    inst: Instruments, splits: int = DEFAULT_SPLITS, n_boot: int = DEFAULT_BOOT, seed: int = 0
) -> list[dict]:
    """``survey_mae`` per simulator (group "survey") and per item (group "item:<name>"), each with a
    cluster-bootstrap interval (participants and simulated conversations resampled), the human
    ceiling (people against people, halves by participant, ``splits`` splits) and the calibrated
    share (ceiling / value)."""
    frame = inst.conversations.reset_index(drop=True)
    items = {n: s for n, s in inst.items.items() if frame[ITEM_PREFIX + n].notna().any()}
    sims = sorted(set(frame["population"]) - {"human"})
    hum = np.flatnonzero(frame["population"].to_numpy() == "human")
    if not sims or not items:
        note = (
            "no simulated conversations in this study" if not sims else "no post-task answers in this study"
        )
        return [record(s, "survey_mae", "survey", note=note) for s in sims or [None]]
    cell_keys, matched = _cells(frame)
    cells, uniq = pd.factorize(cell_keys)
    cells = np.asarray(cells)
    clusters = frame["cluster"].to_numpy()
    coded = coded_items(frame, items)

    def errors(a, b):
        return item_errors(coded, cells, len(uniq), a, b)

    ceil = _survey_ceiling(errors, hum, clusters, splits, seed)
    rows = []
    for i, sim in enumerate(sims or [None]):
        oth = np.flatnonzero(frame["population"].to_numpy() == sim) if sim else np.array([], int)
        point = errors(hum, oth) if len(hum) and len(oth) else {}
        rng = np.random.default_rng(seed + 1 + i)
        draws: dict[str, list[float]] = {}
        for _ in range(n_boot if point else 0):
            e = errors(cluster_resample(hum, clusters[hum], rng), cluster_resample(oth, clusters[oth], rng))
            for k, v in {**e, "survey": _mae(e)}.items():
                if v is not None:
                    draws.setdefault(k, []).append(v)
        why = _why_not(sim, hum, oth, point, matched)
        for group, value in [("survey", _mae(point))] + [(f"item:{n}", point.get(n)) for n in items]:
            key = group.removeprefix("item:")
            rows.append(
                _with_ceiling(
                    record(
                        sim,
                        "survey_mae",
                        group,
                        value,
                        n_human=len(hum),
                        n_agent=len(oth),
                        note=why if value is None else f"matched on {matched}",
                    ),
                    draws.get(key, []),
                    ceil.get(key, []),
                )
            )
    return rows


def _why_not(sim, hum, oth, point, matched) -> str:
    if sim is None:
        return "no simulated conversations in this study"
    if not len(hum):
        return "no human conversations"
    if not point:
        return f"no {matched} answered by both people and this simulator"
    return ""


def _survey_ceiling(errors, hum, clusters, splits, seed) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    if len(np.unique(clusters[hum])) < 2:
        return out
    rng = np.random.default_rng(seed)
    for _ in range(splits):
        a, b = participant_halves(hum, clusters[hum], rng)
        e = errors(a, b)
        for k, v in {**e, "survey": _mae(e)}.items():
            if v is not None:
                out.setdefault(k, []).append(v)
    return out


def _with_ceiling(rec: dict, draws: list[float], ceil: list[float]) -> dict:
    if rec["value"] is not None and len(draws) >= 10:
        # Resampling repeats conversations and thins some cells, which moves an error of cell means
        # by itself (upwards); the interval keeps the draws' spread around the estimate, as
        # analysis.fidelity does for the distances.
        shift = rec["value"] - float(np.mean(draws))
        rec["ci_low"], rec["ci_high"] = (float(x) + shift for x in np.percentile(draws, [2.5, 97.5]))
    if ceil:
        rec.update(
            human_ceiling=float(np.mean(ceil)),
            ceiling_sd=float(np.std(ceil, ddof=1)) if len(ceil) > 1 else None,
            ceiling_low=float(np.percentile(ceil, 2.5)),
            ceiling_high=float(np.percentile(ceil, 97.5)),
            n_splits=len(ceil),
        )
    elif rec["value"] is not None:
        rec["note"] = "; ".join(
            x for x in (rec["note"], "no human ceiling (fewer than two participants share a condition)") if x
        )
    rec["calibrated"] = calibrate(rec["direction"], rec["value"], rec["human_ceiling"])
    return rec


def twin_pairs_df(inst: Instruments) -> pd.DataFrame:
    """Reply pairs of twins: simulator, conversation_id (the twin), human_id, cluster (the person's),
    reply_position, human (the person's rating), agent (the simulator's rating of the same reply
    position of its twin conversation)."""
    cols = ["simulator", "conversation_id", "human_id", "cluster", "reply_position", "human", "agent"]
    conv = inst.conversations
    if "twin_of_id" not in conv.columns:
        return pd.DataFrame(columns=cols)
    twins = conv[(conv["user_kind"] == "agent") & conv["twin_of_id"].notna()]
    people = conv[conv["user_kind"] == "human"].set_index("conversation_id")["cluster"]
    twins = twins[twins["twin_of_id"].isin(people.index)]
    rep = inst.replies.dropna(subset=["satisfaction"])[["conversation_id", "reply_position", "satisfaction"]]
    a = twins[["conversation_id", "twin_of_id", "population"]].merge(rep, on="conversation_id")
    pairs = a.merge(
        rep.rename(columns={"conversation_id": "twin_of_id", "satisfaction": "human"}),
        on=["twin_of_id", "reply_position"],
    )
    pairs = pairs.rename(
        columns={"population": "simulator", "twin_of_id": "human_id", "satisfaction": "agent"}
    )
    pairs["cluster"] = pairs["human_id"].map(people)
    pairs["human_id"] = pairs["human_id"].astype(int)
    return pairs[cols].reset_index(drop=True)


def _alignment(h: np.ndarray, a: np.ndarray) -> tuple[float, float]:
    """(quadratic weighted kappa, Krippendorff's ordinal alpha) of rating pairs on 1-5."""
    from annotation.agreement import cohen_kappa, krippendorff_alpha

    hs, as_ = [str(int(x)) for x in h], [str(int(x)) for x in a]
    kappa = cohen_kappa(hs, as_, SATISFACTION_LEVELS, "quadratic")
    alpha = krippendorff_alpha([[x, y] for x, y in zip(hs, as_)], SATISFACTION_LEVELS, "ordinal")
    return kappa, alpha


TWIN_METRICS = ("twin_weighted_kappa", "twin_ordinal_alpha")
# Every fidelity metric these modules add (the report's instruments section shows these records).
INSTRUMENT_METRIC_NAMES = ("survey_mae", *TWIN_METRICS, "rank_spearman", "rank_kendall")


def twin_alignment_records(inst: Instruments, n_boot: int = DEFAULT_BOOT, seed: int = 0) -> list[dict]:
    """Per simulator: the quadratic weighted kappa and Krippendorff's ordinal alpha between a
    person's rating of a reply and their twin's rating of the same reply position, with intervals
    from resampling people (all their pairs together). People rate each reply once, so there is no
    human ceiling; 1 = the same ratings, 0 = chance."""
    pairs = twin_pairs_df(inst)
    sims = sorted(set(inst.conversations["population"]) - {"human"})
    rows = []
    for i, sim in enumerate(sims or [None]):
        g = pairs[pairs["simulator"] == sim]
        if len(g) < 2:
            note = (
                "no simulated conversations in this study"
                if sim is None
                else "no twin conversations with ratings of the same replies"
                if g.empty
                else "fewer than two rated reply pairs"
            )
            rows += [record(sim, m, "satisfaction", direction="higher", note=note) for m in TWIN_METRICS]
            continue
        h, a = g["human"].to_numpy(float), g["agent"].to_numpy(float)
        point = _alignment(h, a)
        rng = np.random.default_rng(seed + i)
        idx, clusters = np.arange(len(g)), g["cluster"].astype(str).to_numpy()
        draws = [
            _alignment(h[j], a[j]) for j in (cluster_resample(idx, clusters, rng) for _ in range(n_boot))
        ]
        n_people = g["cluster"].nunique()
        for m, value, col in zip(TWIN_METRICS, point, range(2)):
            vals = [d[col] for d in draws if np.isfinite(d[col])]
            lo, hi = (float(x) for x in np.percentile(vals, [2.5, 97.5])) if len(vals) >= 10 else (None, None)
            rows.append(
                record(
                    sim,
                    m,
                    "satisfaction",
                    float(value) if np.isfinite(value) else None,
                    direction="higher",
                    ci_low=lo,
                    ci_high=hi,
                    n_human=int(g["human_id"].nunique()),
                    n_agent=int(g["conversation_id"].nunique()),
                    human_mean=float(h.mean()),
                    agent_mean=float(a.mean()),
                    note=f"{len(g)} reply pairs of {n_people} people; no human ceiling (people rate each reply once)",
                )
            )
    return rows


def instrument_records(
    inst: Instruments, splits: int = DEFAULT_SPLITS, n_boot: int = DEFAULT_BOOT, seed: int = 0
) -> pd.DataFrame:
    """survey_mae and twin alignment records (``RECORD_COLUMNS``)."""
    rows = survey_mae_records(inst, splits, n_boot, seed) + twin_alignment_records(inst, n_boot, seed)
    return pd.DataFrame(rows, columns=RECORD_COLUMNS)


def study_instruments(
    engine,
    data,
    correction: str = "holm",
    n_boot: int = stats.DEFAULT_BOOT,
    splits: int = DEFAULT_SPLITS,
    fidelity_boot: int = DEFAULT_BOOT,
    comparisons: bool = True,
) -> dict:
    """Everything of a loaded study: ``{"instruments", "comparisons", "records", "by_position",
    "note"}`` (``comparisons=False``: no comparison rows), ``note`` one line when the study has no instrument data ('' otherwise). The rank
    agreement (``analysis.rank_agreement``) joins ``records``."""
    from analysis.rank_agreement import rank_agreement_df

    inst = load_instruments(engine, data)
    comp = (
        instrument_comparisons_df(inst, correction, n_boot)
        if comparisons
        else pd.DataFrame(columns=ALL_COLUMNS)
    )
    records = pd.concat(
        [instrument_records(inst, splits, fidelity_boot), rank_agreement_df(inst, splits, fidelity_boot)],
        ignore_index=True,
    )
    return {
        "instruments": inst,
        "comparisons": comp,
        "records": records,
        "by_position": satisfaction_by_position_df(inst),
        "note": availability_note(inst),
    }


def availability_note(inst: Instruments) -> str:
    """One line saying what the study lacks ('' when both kinds answered some instrument)."""
    conv = inst.conversations
    cols = [SATISFACTION, MADE_UP] + [ITEM_PREFIX + n for n in inst.items]
    answered = conv[conv[cols].notna().any(axis=1)] if len(conv) else conv
    kinds = set(answered["user_kind"])
    if not kinds:
        return "Participants' instruments: no per-reply ratings or post-task answers in this study."
    if kinds == {"human"}:
        return "Participants' instruments: only people answered them; no simulated user did (simulate with ratings on)."
    if kinds == {"agent"}:
        return "Participants' instruments: only simulated users answered them; no person did."
    return ""


def merge_fidelity(fidelity: dict | None, records: pd.DataFrame, label_index: dict | None = None) -> dict:
    """``analysis.fidelity`` tables with the instrument and rank-agreement records added and the
    ranking recomputed (their families join it where they have calibrated scores)."""
    from analysis.fidelity import ranking_df

    base = (fidelity or {}).get("records")
    parts = [f for f in (base, records) if f is not None and len(f)]
    recs = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=RECORD_COLUMNS)
    return {**(fidelity or {}), "records": recs, "ranking": ranking_df(recs, label_index)}
