"""Researcher: human vs agent dashboard with filters and drill-down from a bar to its transcripts."""

import streamlit as st

from db.engine import session_scope
from workbench.app.auth import require_role
from workbench.app.common import engine, escape_markdown, settings, show_reply, study_names, table

require_role("researcher")
st.title("Dashboard: people vs simulated users")

from analysis import charts  # noqa: E402  (after the role check: nothing loads for others)
from analysis.compare import analysis_frame, comparisons_df  # noqa: E402
from analysis.dashboard import FIDELITY_TITLE, fidelity_view, readable_table, study_header  # noqa: E402
from analysis.dataset import excluded_note, load_study  # noqa: E402
from analysis.explore import drilldown_ids, filter_options, filter_study  # noqa: E402
from analysis.features import CONTINUOUS_FEATURES  # noqa: E402
from analysis.findings import Names  # noqa: E402
from analysis.likeness import likeness_tables  # noqa: E402
from db.repo import turns_df  # noqa: E402
from workbench.judge import fidelity_suite  # noqa: E402

eng = engine()
names = study_names(eng)
c1, c2 = st.columns(2)
study = c1.selectbox("Study", names, key="dash_study", bind="query-params")  # kept on reload
with session_scope(eng) as s:  # one session: the study's label sources and its data version
    study_id, counts, version = study_header(s, study)
source = c2.selectbox(
    "Label source",
    ["(best available)", *counts],
    format_func=lambda n: n if n not in counts else f"{n} ({counts[n]:,} labels)",
)


@st.cache_resource(show_spinner=False, max_entries=4, ttl=3600)
def _load(url: str, study: str, source: str, version: tuple, codebook_extensions: tuple):
    # ``version`` (counts and latest ids of the study's conversations, turns and labels) is part of
    # the key: new data loads at once, unchanged data comes from the cache.
    from annotation.codebook import load_codebook

    codebook = load_codebook(extensions=codebook_extensions)
    data = load_study(eng, study, labels=None if source == "(best available)" else source, codebook=codebook)
    return data, Names.of(codebook)


@st.cache_resource(show_spinner=False, max_entries=8, ttl=3600)
def _fidelity(url: str, study: str, source: str, version: tuple, filters: tuple, _sub, _names):
    # Seconds of work (fingerprints, embeddings, 20 human-human splits): cached per study, data
    # version and filter choice; the loaded data itself is not hashed (leading underscore).
    # The label-based human-likeness index joins the ranking as its "labels" family, as in the report.
    # workbench.judge.fidelity_suite: the label-free measures, the instruments and stored judgements.
    tables = fidelity_suite(eng, _sub, likeness=likeness_tables(_sub, n_boot=200))
    return fidelity_view(eng, _sub, _names, tables=tables)


with st.spinner("Loading conversations, labels and features (features are computed once, then stored)..."):
    try:
        if st.sidebar.button(
            "Reload data",
            help="Load the study again from the database (new data is "
            "picked up on its own; this also re-reads edited labels)",
        ):
            _load.clear()
            _fidelity.clear()
        url = eng.url.render_as_string()
        data, dnames = _load(url, study, source, version, settings().codebook_extensions)
    except Exception as exc:  # a user-facing message, not a traceback
        st.error(str(exc))
        st.stop()
st.caption(f"Labels: {data.label_source or 'none'} ({data.label_source_reason})")

opts = filter_options(data)
f1, f2, f3, f4 = st.columns(4)
chosen = {
    "scenarios": f1.multiselect(
        "Scenario", opts["scenarios"], format_func=lambda x: str(x).replace("_", " ")
    ),
    "assistant_models": f2.multiselect("Assistant model", opts["assistant_models"]),
    "simulators": f3.multiselect("Simulator configuration", opts["simulators"]),
    "waves": f4.multiselect("Wave", opts["waves"]),
}
sub = filter_study(data, **chosen)
frame = analysis_frame(sub)
kinds = frame["user_kind"].value_counts()
st.caption(
    f"{int(kinds.get('human', 0))} human and {int(kinds.get('agent', 0))} agent conversations. "
    + excluded_note(data)
)
titles = {d: dnames.title(d) for d in sub.dimensions}

tab_fid, tab_dist, tab_effects, tab_like, tab_feat = st.tabs(
    ["Fidelity", "Distributions", "Effect sizes", "Human-likeness (labels)", "Features"]
)
with tab_dist:
    if not sub.dimensions:
        st.info("No labels for these conversations.")
    else:
        dim = st.selectbox("Dimension", dnames.sort(sub.dimensions), format_func=dnames.title)
        fig = charts.label_distribution_fig(
            frame,
            dim,
            sub.scales.get(dim, ("", []))[1],
            title=dnames.title(dim),
            value_titles=dnames.labels.get(dim, {}),
        )
        event = st.plotly_chart(fig, on_select="rerun", selection_mode="points", key=f"dist-{dim}")
        points = (event or {}).get("selection", {}).get("points", []) if event else []
        custom = points[0].get("customdata") if points else None
        if custom and len(custom) == 3:
            kind, scen, value = custom
            ids = drilldown_ids(frame, dim, kind, scen, value)
            who = "people's" if kind == "human" else "simulated users'"
            st.subheader(
                f"{len(ids)} {who} conversations with {dnames.title(dim)} = {dnames.label(dim, value)} "
                f"({str(scen).replace('_', ' ')})"
            )
            if ids:
                conv_id = st.selectbox("Conversation", ids)
                with session_scope(eng) as s:
                    turns = turns_df(s, sub.study_id, conversation_ids=[conv_id])
                for t in turns.itertuples():
                    with st.chat_message("user" if t.role == "user" else "assistant"):
                        if t.role == "assistant":
                            show_reply(t.content)  # safe markdown: nothing loads, links or runs
                        else:
                            st.text(t.content)  # plain text: nothing a person typed is interpreted
        else:
            st.caption("Click a bar to list the conversations behind it.")
with tab_effects:
    n_boot = st.select_slider("Bootstrap replicates", [200, 500, 1000], value=200)
    comp = comparisons_df(sub, n_boot=n_boot, by=("scenario",))
    st.plotly_chart(charts.forest_fig(comp, "pooled", "label", titles, dnames.order))
    st.plotly_chart(charts.forest_fig(comp, "scenario", "label", titles, dnames.order))
    # p-values in scientific notation: fixed-point cuts the tiny ones off at the left ("…0000006")
    table(readable_table(comp, dnames), hide_index=True, width="stretch")
    st.download_button("comparisons.csv", comp.to_csv(index=False), "comparisons.csv", "text/csv")
with tab_like:
    tables = likeness_tables(sub, n_boot=200)
    table(readable_table(tables["ranking"], dnames), hide_index=True, width="stretch")
    st.plotly_chart(charts.likeness_fig(tables["distances"], titles, dnames.order))
    if len(tables["failures"]):
        table(readable_table(tables["failures"], dnames), hide_index=True, width="stretch")
with tab_feat:
    available = [c for c in CONTINUOUS_FEATURES if c in sub.features.columns]
    if not available or frame.empty:
        st.info("No conversation features for these conversations.")
    else:
        feature = st.selectbox("Feature", available, format_func=dnames.title)
        st.plotly_chart(charts.turn_length_fig(frame, feature, dnames.title(feature)))
with tab_fid:  # last in the script (it may take seconds the first time), first among the tabs
    st.subheader(FIDELITY_TITLE)
    filters = tuple((k, tuple(v)) for k, v in chosen.items())
    with st.spinner("Computing the fidelity measures and their human ceilings (once per data version)..."):
        try:
            fid = _fidelity(url, study, source, version, filters, sub, dnames)
        except Exception as exc:  # a user-facing message, not a traceback
            st.error(f"The fidelity measures could not be computed: {exc}")
            fid = None
    if fid is not None:
        st.markdown(
            "Each measure beside the **human ceiling** (people against people: two halves of the "
            "participants, 20 splits) and as a **share** of it (100% = as close to people as people "
            "are to each other)."
        )
        for note in fid.notes:
            st.markdown(f"- {escape_markdown(note)}")
        if fid.ranking is not None:
            st.markdown("**Ranking of simulators**")
            table(fid.ranking, hide_index=True, width="stretch")
        if fid.metrics is not None and len(fid.metrics):
            st.plotly_chart(fid.figure)
            st.markdown("**Every measure beside the human ceiling**")
            # every row in view (about 11 per simulator), no inner scrolling
            table(
                fid.metrics,
                hide_index=True,
                width="stretch",
                height=min(35 * (len(fid.metrics) + 1) + 3, 1200),
            )
        for title, extra in fid.extra.items():  # e.g. indistinguishability three ways, instruments
            st.markdown(f"**{escape_markdown(title)}**")
            table(extra, hide_index=True, width="stretch")
        if fid.features is not None and len(fid.features):
            with st.expander("The fingerprint features one by one"):
                table(fid.features, hide_index=True, width="stretch")
        if len(fid.records):
            st.download_button(
                "fidelity.csv", fid.records.to_csv(index=False), "fidelity.csv", "text/csv", key="fid-csv"
            )
