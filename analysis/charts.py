"""Plotly figures built from the analysis frames; pages and the report only show them.

Every builder accepts empty or one-sided data and then returns a figure with a "no data" note
instead of raising. Bars of label distributions carry ``customdata`` = (user_kind, scenario,
value) so a page can drill down from a clicked bar to the conversations behind it.
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio

KIND_COLORS = {"human": "#1f77b4", "agent": "#ff7f0e"}
KIND_NAMES = {"human": "people", "agent": "simulated users"}
# One look for every figure (report and dashboard): the same font, background, colours and margins,
# so figures taken into a paper match each other.
STYLE = go.layout.Template(
    layout={
        "font": {"family": "Helvetica, Arial, sans-serif", "size": 13, "color": "#222"},
        "title": {"font": {"size": 15}, "x": 0, "xanchor": "left"},
        "paper_bgcolor": "white",
        "plot_bgcolor": "white",
        "colorway": ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"],
        "xaxis": {"showline": True, "linecolor": "#888", "gridcolor": "#eee", "zerolinecolor": "#bbb"},
        "yaxis": {"showline": True, "linecolor": "#888", "gridcolor": "#eee", "zerolinecolor": "#bbb"},
        "legend": {"bgcolor": "rgba(255,255,255,0.8)"},
        "margin": {"l": 60, "r": 20, "t": 60, "b": 50},
    }
)
pio.templates["workbench"] = STYLE
# The forest plot's test per dimension, best first: for Cramer's V the participant-clustered row
# (its interval resamples whole participants), else the conversation-level one.
PRIMARY_TESTS = (
    "wald_cluster_robust",
    "chi_square",
    "chi_square_permutation",
    "fisher_exact",
    "mann_whitney",
)


def empty_figure(title: str, message: str = "no data") -> go.Figure:
    fig = go.Figure()
    fig.add_annotation(
        text=message, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False, font={"size": 16}
    )
    fig.update_layout(
        title=title, xaxis={"visible": False}, yaxis={"visible": False}, height=300, template=STYLE
    )
    return fig


def _name(titles: dict | None, key) -> str:
    """A readable name for ``key`` (a dimension, feature or source) from ``titles``, else the key."""
    return str((titles or {}).get(key, key))


def label_distribution_fig(
    frame: pd.DataFrame,
    dimension: str,
    categories: list | None = None,
    by_scenario: bool = True,
    title: str | None = None,
    value_titles: dict | None = None,
) -> go.Figure:
    """Share of each label value, human vs agent, one panel per scenario (plus "all").
    ``title``: the dimension's readable name; ``value_titles``: label value -> shown name (the
    bars' ``customdata`` keep the stored value)."""
    title = (
        f"{title or dimension}: people vs simulated users"
        if title
        else f"{dimension}: label distribution, human vs agent"
    )
    if frame.empty or dimension not in frame.columns or frame[dimension].dropna().empty:
        return empty_figure(title)
    title_given = value_titles is not None
    d = frame.dropna(subset=[dimension]).assign(value=lambda x: x[dimension].astype(str))
    panels = [("all", d)]
    if by_scenario:
        panels += [(s, g) for s, g in d.groupby("scenario", sort=True)]
    cats = [c for c in (categories or []) if c in set(d["value"])] + sorted(
        set(d["value"]) - set(categories or [])
    )
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[p[0] for p in panels], shared_yaxes=True)
    for col, (scen, g) in enumerate(panels, start=1):
        for kind in ("human", "agent"):
            sub = g[g["user_kind"] == kind]
            n = len(sub)
            share = (
                sub["value"].value_counts(normalize=True).reindex(cats, fill_value=0.0)
                if n
                else pd.Series(0.0, index=cats)
            )
            fig.add_trace(
                go.Bar(
                    x=[_name(value_titles, c) for c in cats],
                    y=share.values,
                    name=KIND_NAMES[kind] if title_given else kind,
                    marker_color=KIND_COLORS[kind],
                    legendgroup=kind,
                    showlegend=col == 1,
                    customdata=[[kind, scen, c] for c in cats],
                    hovertemplate=f"{kind} (n={n})<br>%{{x}}: %{{y:.1%}}<extra>{scen}</extra>",
                ),
                row=1,
                col=col,
            )
    fig.update_layout(title=title, barmode="group", height=360, yaxis_tickformat=".0%", template=STYLE)
    # Labels are categories even when they look like numbers (a 1-5 scale): every value gets its tick,
    # in the codebook's order, instead of a numeric axis that shows only some of them.
    shown = [_name(value_titles, c) for c in cats]
    fig.update_xaxes(type="category", categoryorder="array", categoryarray=shown)
    return fig


def forest_fig(
    comparisons: pd.DataFrame,
    slice_by: str = "pooled",
    kind: str = "label",
    titles: dict | None = None,
    order: list | None = None,
) -> go.Figure:
    """Effect sizes with intervals of the primary test per dimension (one marker per scenario when
    ``slice_by="scenario"``): Cramer's V of the participant-clustered row where it has one (else of
    the chi-square row), Cliff's delta of the Mann-Whitney row. Cramer's V is unsigned; Cliff's
    delta is agent minus human. ``titles``: dimension -> readable name (then the effect sizes get
    their plain names too); ``order``: the dimensions top to bottom (default: as in the table)."""
    what = (
        {"pooled": "all scenarios", "scenario": "per scenario"}.get(slice_by, slice_by)
        if titles
        else slice_by
    )
    title = f"Effect sizes with 95% intervals ({kind}s, {what})"
    if comparisons is None or comparisons.empty:
        return empty_figure(title)
    d = comparisons[
        (comparisons["slice_by"] == slice_by)
        & comparisons["test"].isin(PRIMARY_TESTS)
        & comparisons["effect_size"].notna()
    ]
    if "kind" in d.columns:
        d = d[d["kind"] == kind]
    rank = {t: i for i, t in enumerate(PRIMARY_TESTS)}
    d = (
        d.assign(_rank=d["test"].map(rank))
        .sort_values("_rank", kind="stable")
        .drop_duplicates(["dimension", "scenario", "effect_size_name"])
        .drop(columns="_rank")
    )
    if d.empty:
        return empty_figure(title, "no effect sizes (not enough data)")
    from analysis.findings import EFFECT_NAMES

    if titles is not None:
        d = d.assign(
            _label=d["dimension"].map(lambda x: _name(titles, x))
            + " ("
            + d["effect_size_name"].map(lambda x: EFFECT_NAMES.get(x, x))
            + ")"
        )
    else:
        d = d.assign(_label=d["dimension"] + " (" + d["effect_size_name"] + ")")
    rows = list(dict.fromkeys(d.sort_values("dimension", key=_order_key(order))["_label"]))
    fig = go.Figure()
    for scen, g in d.groupby("scenario", sort=True):
        fig.add_trace(
            go.Scatter(
                x=g["effect_size"],
                y=g["_label"],
                mode="markers",
                name=scen,
                error_x={
                    "type": "data",
                    "symmetric": False,
                    "array": g["ci_high"] - g["effect_size"],
                    "arrayminus": g["effect_size"] - g["ci_low"],
                },
                hovertemplate="%{y}: %{x:.3f}<extra>" + str(scen) + "</extra>",
            )
        )
    fig.add_vline(x=0, line_dash="dot", line_color="grey")
    fig.update_layout(
        title=title,
        height=max(300, 28 * len(rows) + 120),
        xaxis_title="effect size (signed: simulated minus people)" if titles else "effect size",
        template=STYLE,
    )
    # the first dimension at the top
    fig.update_yaxes(type="category", categoryorder="array", categoryarray=rows[::-1], automargin=True)
    return fig


def _order_key(order: list | None):
    """A sort key putting dimensions in ``order`` (others after, by name)."""
    pos = {n: i for i, n in enumerate(order or [])}
    return lambda s: s.map(lambda n: (pos.get(n, len(pos)), n))


def agreement_heatmap_fig(
    agreement: pd.DataFrame | None,
    value: str = "krippendorff_alpha",
    titles: dict | None = None,
    order: list | None = None,
) -> go.Figure:
    """Agreement per dimension (rows) and pair of sources x user kind (columns, "A vs B: kind").
    Every row and column is labelled and every cell shows its value; ``titles``/``order`` as in
    ``forest_fig``."""
    title = f"Agreement between label sources ({value.replace('_', ' ') if titles else value})"
    if agreement is None or agreement.empty or value not in agreement.columns:
        return empty_figure(title, "agreement not available")
    d = agreement.copy()
    if {"source_a", "source_b"} <= set(d.columns):
        d["pair"] = d["source_a"].astype(str) + " vs " + d["source_b"].astype(str)
    else:
        d["pair"] = d.get("sources", pd.Series("", index=d.index)).astype(str)
    d["column"] = d["pair"] + ": " + d["user_kind"].astype(str)
    kinds = {"human": "people", "agent": "simulated users", "all": "all conversations"}
    one_pair = titles is not None and d["pair"].nunique() == 1
    if one_pair:  # the pair goes into the title; the columns are the user kinds
        title += f"<br><sup>{d['pair'].iloc[0]}</sup>"
    columns = list(dict.fromkeys(d["column"]))
    m = d.pivot_table(index="dimension", columns="column", values=value, aggfunc="first", dropna=False)
    m = m[[c for c in columns if c in m.columns]]
    if m.empty:
        return empty_figure(title, "agreement not available")
    m = m.loc[sorted(m.index, key=lambda n: _order_key(order)(pd.Series([n])).iloc[0])]
    fig = go.Figure(
        go.Heatmap(
            z=m.values,
            x=[
                kinds.get(c.rsplit(": ", 1)[1], c)
                if one_pair
                else (c.replace(" vs ", "<br>vs ").replace(": ", "<br>") if titles is not None else c)
                for c in m.columns
            ],
            y=[_name(titles, r) for r in m.index],
            zmin=-1,
            zmax=1,
            zmid=0,
            colorscale="RdBu",
            text=[[("" if pd.isna(v) else f"{v:.2f}") for v in row] for row in m.values],
            texttemplate="%{text}",
            textfont={"size": 13},
            xgap=2,
            ygap=2,
            colorbar={"title": {"text": "alpha"}, "thickness": 14},
        )
    )
    fig.update_layout(title=title, height=max(320, 34 * len(m) + 160), template=STYLE)
    # every row and column labelled (plotly otherwise thins the ticks of a long axis), first on top
    fig.update_yaxes(autorange="reversed", dtick=1, automargin=True, showline=False)
    fig.update_xaxes(side="bottom", automargin=True, showline=False, tickangle=0)
    return fig


def likeness_fig(distances: pd.DataFrame, titles: dict | None = None, order: list | None = None) -> go.Figure:
    """Jensen-Shannon distance to the humans per dimension, one bar group per simulator."""
    title = "Distance to human label distributions (Jensen-Shannon, 0 = identical)"
    if distances is None or distances.empty or distances["js_distance"].dropna().empty:
        return empty_figure(title)
    d = distances.dropna(subset=["js_distance"])
    d = d.sort_values("dimension", key=_order_key(order), kind="stable")
    fig = go.Figure()
    for sim, g in d.groupby("simulator", sort=True):
        fig.add_trace(
            go.Bar(
                x=[_name(titles, x) for x in g["dimension"]],
                y=g["js_distance"],
                name=str(sim),
                error_y={
                    "type": "data",
                    "symmetric": False,
                    "array": g["ci_high"] - g["js_distance"],
                    "arrayminus": g["js_distance"] - g["ci_low"],
                },
            )
        )
    fig.update_layout(title=title, barmode="group", yaxis_range=[0, 1], height=400, template=STYLE)
    fig.update_xaxes(tickangle=-30, automargin=True)
    return fig


def turn_length_fig(
    frame: pd.DataFrame, feature: str = "user_words_per_turn", title: str | None = None
) -> go.Figure:
    """Distribution of a per-conversation feature (default words per user turn), human vs agent.
    ``title``: the feature's readable name."""
    name = title or feature
    title = f"{name}: people vs simulated users" if title else f"{feature}: human vs agent"
    if frame is None or frame.empty or feature not in frame.columns or frame[feature].dropna().empty:
        return empty_figure(title)
    fig = go.Figure()
    for kind in ("human", "agent"):
        v = frame.loc[frame["user_kind"] == kind, feature].dropna()
        if len(v):
            fig.add_trace(
                go.Box(
                    y=v,
                    x=frame.loc[v.index, "scenario"],
                    name=f"{KIND_NAMES[kind] if name != feature else kind} (n={len(v)})",
                    marker_color=KIND_COLORS[kind],
                    boxpoints=False,
                )
            )
    fig.update_layout(title=title, boxmode="group", height=380, yaxis_title=name, template=STYLE)
    return fig


def trajectory_fig(trajectory: pd.DataFrame | None, feature: str = "words") -> go.Figure:
    """Mean of a per-turn feature (default words per user turn) by user-turn position, one line per
    population (``analysis.trajectory.turn_trajectory_df``) with 95% t-interval error bars."""
    title = f"Mean {feature} per user turn by position (95% t-intervals)"
    if trajectory is None or trajectory.empty or "feature" not in trajectory.columns:
        return empty_figure(title, "per-turn trajectories not available")
    d = trajectory[trajectory["feature"] == feature]
    if d.empty:
        return empty_figure(title, "per-turn trajectories not available")
    fig = go.Figure()
    pops = sorted(d["population"].unique(), key=lambda p: (p != "human", p))
    for pop in pops:
        g = d[d["population"] == pop].sort_values("position")
        color = KIND_COLORS["human"] if pop == "human" else None
        fig.add_trace(
            go.Scatter(
                x=g["position"],
                y=g["mean"],
                mode="lines+markers",
                name=str(pop),
                line={"color": color} if color else None,
                error_y={
                    "type": "data",
                    "symmetric": False,
                    "array": (g["ci_high"] - g["mean"]).fillna(0),
                    "arrayminus": (g["mean"] - g["ci_low"]).fillna(0),
                },
                customdata=g[["n"]].to_numpy(),
                hovertemplate="position %{x}: %{y:.2f} (n=%{customdata[0]})<extra>" + str(pop) + "</extra>",
            )
        )
    fig.update_layout(
        title=title,
        height=380,
        xaxis_title="user-turn position",
        yaxis_title=f"mean {feature}",
        xaxis_dtick=1,
        template=STYLE,
    )
    return fig


# The summary fidelity metrics shown in the report's chart (the per-feature rows stay in the table).
FIDELITY_METRICS = (
    "usi_d1",
    "usi_d2",
    "usi_d3",
    "usi_d4",
    "usi_d",
    "mattr_z",
    "yules_k_z",
    "hdd_z",
    "coverage",
    "frechet",
    "classifier_auc",
)


def fidelity_fig(records: pd.DataFrame, titles: dict | None = None) -> go.Figure:
    """Each fidelity metric as a share of what people reach against each other (the human ceiling,
    1 = as close to people as people are to each other), one bar group per simulator. ``titles``:
    metric -> readable name."""
    title = "Fidelity as a share of the human ceiling (1 = as close as people are to each other)"
    if records is None or records.empty or "calibrated" not in records:
        return empty_figure(title)
    d = records[records["metric"].isin(FIDELITY_METRICS)].dropna(subset=["calibrated"])
    if d.empty:
        return empty_figure(title, "no metric could be computed")
    rank = {m: i for i, m in enumerate(FIDELITY_METRICS)}
    d = d.sort_values("metric", key=lambda s: s.map(rank), kind="stable")
    fig = go.Figure()
    for sim, g in d.groupby("simulator", sort=True):
        fig.add_trace(go.Bar(x=[_name(titles, m) for m in g["metric"]], y=g["calibrated"], name=str(sim)))
    fig.add_hline(y=1, line_dash="dot", line_color="#555", annotation_text="human ceiling")
    fig.update_layout(title=title, barmode="group", yaxis_range=[0, 1.1], height=400, template=STYLE)
    fig.update_xaxes(tickangle=-30, automargin=True)
    return fig


def satisfaction_position_fig(by_position: pd.DataFrame | None) -> go.Figure:
    """Mean per-reply satisfaction (1-5) by reply position, people against each simulator, with 95%
    t-intervals (``analysis.instruments.satisfaction_by_position_df``)."""
    title = "Satisfaction with each reply, by its position (mean, 95% t-intervals)"
    if by_position is None or by_position.empty:
        return empty_figure(title, "no per-reply satisfaction ratings")
    fig = go.Figure()
    for pop in sorted(by_position["population"].unique(), key=lambda p: (p != "human", p)):
        g = by_position[by_position["population"] == pop].sort_values("reply_position")
        name = KIND_NAMES["human"] if pop == "human" else f"simulated: {pop}"
        fig.add_trace(
            go.Scatter(
                x=g["reply_position"],
                y=g["mean"],
                mode="lines+markers",
                name=name,
                line={"color": KIND_COLORS["human"], "width": 3} if pop == "human" else None,
                error_y={
                    "type": "data",
                    "symmetric": False,
                    "array": (g["ci_high"] - g["mean"]).fillna(0),
                    "arrayminus": (g["mean"] - g["ci_low"]).fillna(0),
                },
                customdata=g[["n"]].to_numpy(),
                hovertemplate="reply %{x}: %{y:.2f} (n=%{customdata[0]})<extra>" + name + "</extra>",
            )
        )
    fig.update_layout(
        title=title,
        height=380,
        xaxis_title="assistant reply (1 = the first)",
        yaxis_title="mean satisfaction (1-5)",
        yaxis_range=[1, 5.2],
        xaxis_dtick=1,
        template=STYLE,
    )
    return fig
