"""Features, statistics, charts and reports.

The public names of the submodules are re-exported here, e.g. ``from analysis import load_study,
comparisons_df``. They are imported on first use (PEP 562 ``__getattr__``), so ``import analysis``
stays cheap (no pandas, spaCy or plotly) and the submodules' imports of each other cannot cycle
through this file. ``analysis.synthetic`` is test support and is not re-exported.

Example::

    from analysis import analyze, write_report

    result = analyze(engine, "recllmsim")
    write_report(result, engine, Path("report.html"))
"""

from __future__ import annotations

import importlib

# submodule -> the public names it contributes
_EXPORTS: dict[str, tuple[str, ...]] = {
    "dataset": (
        "StudyData",
        "load_study",
        "default_language",
        "label_sources_coverage_df",
        "choose_label_source",
    ),
    "features": (
        "Feature",
        "TurnMeasure",
        "FEATURES",
        "TURN_MEASURES",
        "CONTINUOUS_FEATURES",
        "NOMINAL_FEATURES",
        "TURN_FEATURES",
        "FEATURES_VERSION",
        "compute_features_df",
        "features_df",
        "feature_version",
    ),
    "compare": (
        "SCALES",
        "ScaleTests",
        "comparisons_df",
        "comparison_records",
        "analysis_frame",
        "matched_units_df",
    ),
    "likeness": ("likeness_tables", "js_distances_df", "classifier_auc", "failure_checks_df"),
    "trajectory": ("turn_trajectory_df", "stored_turn_features_df"),
    "explore": ("filter_options", "filter_study", "drilldown_ids"),
    "report": (
        "AnalysisResult",
        "analyze",
        "agreement_df",
        "write_analysis",
        "render_report",
        "write_report",
    ),
}
_SOURCE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_SOURCE)


def __getattr__(name: str):
    module = _SOURCE.get(name)
    if module is None:  # also how ``from analysis import stats`` falls through to the submodule
        raise AttributeError(f"module 'analysis' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
