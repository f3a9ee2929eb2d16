"""Researcher: settle the items where annotators disagree; the decision is its own label source.

The conversation is shown through the same blind view as on the labelling page.
"""

import streamlit as st

from annotation import adjudication as A
from annotation.labelling import blind_view
from db.engine import session_scope
from workbench.app.auth import require_role
from workbench.app.common import codebook_or_stop, engine, escape_markdown, show_text, show_turn
from workbench.errors import WorkbenchError

user = require_role("researcher")
st.title("Adjudicate disagreements")
eng = engine()
codebook = codebook_or_stop()
with session_scope(eng) as s:
    studies = A.study_names_with_labels(s)
if not studies:
    st.info("No human labels yet: annotators label on the Annotate page.")
    st.stop()
c1, c2, c3 = st.columns(3)
study = c1.selectbox("Study", studies, key="adj_study")
dims = c2.multiselect("Dimensions", codebook.names, key="adj_dims")
open_only = c3.toggle("Only open items", value=True, key="adj_open")
with session_scope(eng) as s:
    df = A.disagreements_df(s, study, dimensions=dims or None)
# Progress counts the items the annotators disagree on now; decisions on items they no longer
# disagree on (one changed or withdrew a label) stay listed with their status, to be revisited.
n_all = int(df["status"].isin([A.OPEN, A.DECIDED]).sum())
n_open = int((df["status"] == A.OPEN).sum())
st.progress(
    (n_all - n_open) / n_all if n_all else 1.0, text=f"{n_all - n_open} of {n_all} disagreements settled"
)
n_stale = len(df) - n_all
if n_stale:
    st.caption(
        f"{n_stale} decided item(s) are no longer disputed (an annotator changed or withdrew a label); "
        "their decision still counts: they are listed with their status when *Only open items* is off."
    )
if open_only:
    df = df[df["status"] == A.OPEN]
if df.empty:
    st.success("Nothing to adjudicate." if not n_all and not n_stale else "Every disagreement is settled.")
    st.stop()

# Items are chosen by a stable id (conversation, dimension, turn), not by position: after a decision
# the list shrinks, and a position would silently point at another item under the old name.
df = df.reset_index(drop=True)
ids = [f"{r.conversation_id}|{r.dimension}|{int(r.turn_index)}" for r in df.itertuples()]
row_of = {item: i for i, item in enumerate(ids)}
if st.session_state.get("adj_item") not in row_of:
    st.session_state["adj_item"] = ids[0]  # the item just settled (or a filter) is gone: the next one


def _describe(item: str) -> str:
    r = df.iloc[row_of[item]]
    turn = f", turn {int(r['turn_index']) + 1}" if r["turn_index"] >= 0 else ""
    status = "" if r["status"] == A.OPEN else f" ({r['status']})"
    return f"conversation {r['conversation_id']}: {r['dimension']}{turn}{status}"


pick = st.selectbox("Item", ids, format_func=_describe, key="adj_item")
row = df.iloc[row_of[pick]]
dim = codebook.get(row["dimension"]) if row["dimension"] in codebook else None
with session_scope(eng) as s:
    view = blind_view(s, int(row["conversation_id"]), "en")  # researchers read the language of the codebook

left, right = st.columns([3, 2])
with left:
    st.caption(escape_markdown(f"Task: {view.scenario_name}"))
    for turn in view.turns:
        with st.chat_message(turn.role):
            if turn.index == row["turn_index"]:
                st.caption(f"⟶ turn {turn.index + 1} (the item)")
            show_turn(turn.role, turn.text)
with right:
    st.subheader(escape_markdown(dim.display_title() if dim else row["dimension"]))
    if dim:
        with st.expander("Definition", expanded=True):
            show_text(dim.definition.get("en"))
            for value in dim.labels:
                text = dim.label_definition(value)
                if text:
                    st.markdown(f"**{escape_markdown(value)}**: {escape_markdown(text)}")
            aspects = dim.aspect_names(view.scenario_key)
            if aspects:
                st.markdown("*Aspects*: " + escape_markdown(", ".join(aspects)))
    st.markdown("**Annotators' labels**")
    for src, value in sorted(row["values"].items()):
        who = src.split(":", 1)[-1] if src.startswith("human:") else src  # annotator name
        st.markdown(f"- {escape_markdown(who)}: **{escape_markdown(value)}**")
    options = dim.labels if dim else sorted(set(row["values"].values()))
    with st.form(key=f"adj-{row['conversation_id']}-{row['dimension']}-{row['turn_index']}"):
        current = row["adjudicated"]
        final = st.radio(
            "Final label",
            options,
            index=options.index(current) if current in options else None,
            horizontal=True,
        )
        note = st.text_input("Note (optional)")
        done = st.form_submit_button("Save decision", type="primary")
    if done:
        if final is None:
            st.error("Choose the final label.")
        else:
            try:
                with session_scope(eng) as s:
                    A.adjudicate(
                        s,
                        study,
                        int(row["conversation_id"]),
                        row["dimension"],
                        final,
                        codebook,
                        turn_index=int(row["turn_index"]),
                        adjudicator=user["name"],
                        note=note,
                    )
            except WorkbenchError as exc:
                st.error(escape_markdown(str(exc)))
            else:
                st.toast("Saved.")
                st.rerun()
