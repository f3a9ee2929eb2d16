"""Codebook, labelling, labellers and agreement.

The public names of the package's modules are available from here (``from annotation import
load_codebook, study_agreement_df``). They resolve on first use (PEP 562): importing one module of
the package does not load the others (scipy for agreement, spaCy and scikit-learn for labellers).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from annotation.adjudication import adjudicate, blind_items, disagreements_df
    from annotation.agreement import (
        agreement_records,
        annotators_agreement_df,
        cohen_kappa,
        fleiss_kappa,
        indistinguishability_df,
        krippendorff_alpha,
        pair_agreement_df,
        study_agreement_df,
    )
    from annotation.codebook import Codebook, Dimension, load_codebook
    from annotation.labellers import LABELLERS, LabelRun, LabelSettings, get_labeller, run_labeller
    from annotation.labelling import blind_view, guesses_df, save_labels, skip_item
    from annotation.queue import assign_items, next_item, progress_df, reassign_items
    from annotation.store import LabelRecord, ensure_source, write_labels

_MODULES = {
    "annotation.adjudication": ["adjudicate", "blind_items", "disagreements_df"],
    "annotation.agreement": [
        "agreement_records",
        "annotators_agreement_df",
        "cohen_kappa",
        "fleiss_kappa",
        "indistinguishability_df",
        "krippendorff_alpha",
        "pair_agreement_df",
        "study_agreement_df",
    ],
    "annotation.codebook": ["Codebook", "Dimension", "load_codebook"],
    "annotation.labellers": ["LABELLERS", "LabelRun", "LabelSettings", "get_labeller", "run_labeller"],
    "annotation.labelling": ["blind_view", "guesses_df", "save_labels", "skip_item"],
    "annotation.queue": ["assign_items", "next_item", "progress_df", "reassign_items"],
    "annotation.store": ["LabelRecord", "ensure_source", "write_labels"],
}
_WHERE = {name: module for module, names in _MODULES.items() for name in names}


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Codebook",
    "Dimension",
    "LABELLERS",
    "LabelRecord",
    "LabelRun",
    "LabelSettings",
    "adjudicate",
    "agreement_records",
    "annotators_agreement_df",
    "assign_items",
    "blind_items",
    "blind_view",
    "cohen_kappa",
    "disagreements_df",
    "ensure_source",
    "fleiss_kappa",
    "get_labeller",
    "guesses_df",
    "indistinguishability_df",
    "krippendorff_alpha",
    "load_codebook",
    "next_item",
    "pair_agreement_df",
    "progress_df",
    "reassign_items",
    "run_labeller",
    "save_labels",
    "skip_item",
    "study_agreement_df",
    "write_labels",
]
