"""Automatic labellers: LLM (``llm``), rule-based (``rules``) and trained (``trained``), looked up by
name in ``LABELLERS`` (``registry``) and run with one ``LabelSettings`` into one ``LabelRun``.

Each writes Labels under its own LabelSource (``llm:<model>:<prompt version>``, ``rule:<version>``,
``trained:<train source>:<version>``) through ``annotation.store``.

The registry and the LLM labeller are imported here; the rule and trained labellers' names resolve
on first use (PEP 562), so ``import annotation.labellers`` does not load spaCy or scikit-learn.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from annotation.labellers.llm import (
    DEFAULT_PROMPT,
    JsonReply,
    LabellingModel,
    LabelPlan,
    LabelSummary,
    label_with_llm,
    label_with_llm_sync,
    load_prompt,
    plan_labelling,
)
from annotation.labellers.registry import (
    LABELLERS,
    Labeller,
    LabelRun,
    LabelSettings,
    check_settings,
    get_labeller,
    register,
    run_labeller,
)

if TYPE_CHECKING:
    from annotation.labellers.rules import RuleLabeller, label_study
    from annotation.labellers.trained import TrainedLabeller, TrainReport, cross_validate, train_and_label

_LAZY = {
    "RuleLabeller": "annotation.labellers.rules",
    "label_study": "annotation.labellers.rules",
    "TrainedLabeller": "annotation.labellers.trained",
    "TrainReport": "annotation.labellers.trained",
    "cross_validate": "annotation.labellers.trained",
    "train_and_label": "annotation.labellers.trained",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DEFAULT_PROMPT",
    "LABELLERS",
    "JsonReply",
    "LabelPlan",
    "LabelRun",
    "LabelSettings",
    "LabelSummary",
    "Labeller",
    "LabellingModel",
    "RuleLabeller",
    "TrainReport",
    "TrainedLabeller",
    "check_settings",
    "cross_validate",
    "get_labeller",
    "label_study",
    "label_with_llm",
    "label_with_llm_sync",
    "load_prompt",
    "plan_labelling",
    "register",
    "run_labeller",
    "train_and_label",
]
