"""Researcher: browse transcripts; a human conversation beside its matched agent conversations."""

import streamlit as st

from db.engine import session_scope
from workbench.app.auth import require_role
from workbench.app.common import engine, escape_markdown, show_turn, study_names, table
from workbench.participation.transcripts import comparison, filter_transcripts, transcripts_df

require_role("researcher")
st.title("Transcripts")
eng = engine()
names = study_names(eng)
c1, c2, c3, c4 = st.columns(4)
study = c1.selectbox("Study", names, key="tr_study", bind="query-params")
with session_scope(eng) as s:
    all_rows = transcripts_df(s, study)
scenario = c2.selectbox("Scenario", ["(all)"] + sorted(all_rows["scenario"].dropna().unique().tolist()))
kind = c3.selectbox("User kind", ["(all)", "human", "agent"])
scenario, kind = (None if v == "(all)" else v for v in (scenario, kind))
# Only the conditions left by the scenario and user-kind filters (imported data has thousands).
scoped = filter_transcripts(all_rows, scenario=scenario, user_kind=kind)
condition = c4.selectbox("Condition", ["(all)"] + sorted(scoped["condition_key"].dropna().unique().tolist()))
rows = filter_transcripts(scoped, condition=None if condition == "(all)" else condition)
st.caption(f"{len(rows)} conversations")
table(rows.head(500), hide_index=True, width="stretch")
if rows.empty:
    st.stop()
conv_id = int(st.selectbox("Open conversation", rows["conversation_id"].tolist()))


def show(turns, title: str) -> None:
    st.markdown(f"**{title}**")
    for t in turns:
        with st.chat_message(t.role if t.role in ("user", "assistant") else "ai"):
            show_turn(t.role, t.content)
            notes = []
            if t.hallucination:
                notes.append(f"hallucination: {t.hallucination}")
            if t.satisfaction:
                notes.append(f"satisfaction: {t.satisfaction}/5")
            if notes:
                st.caption("; ".join(notes))
            if t.satisfaction_reason:
                st.caption("reason: " + escape_markdown(t.satisfaction_reason))


with session_scope(eng) as s:
    shown = comparison(s, conv_id, shown=2)
matched = shown.matched
kind_of = dict(zip(all_rows["conversation_id"], all_rows["user_kind"]))
cols = st.columns(1 + len(shown.matched_turns))
with cols[0]:
    show(shown.turns, f"Conversation {conv_id} ({kind_of.get(conv_id, '')})")
for col, (other, turns) in zip(cols[1:], shown.matched_turns.items()):
    with col:
        show(turns, f"Matched conversation {other} ({kind_of.get(other, '')})")
if not matched:
    st.caption(
        "No matched conversation of the other user kind: none shares this conversation's condition "
        "and none is its digital twin (imported studies give every conversation its own condition; "
        "simulate twins of the human conversations to get pairs)."
    )
if len(matched) > 2:
    st.caption(f"{len(matched) - 2} more matched conversations: {', '.join(map(str, matched[2:12]))}")
