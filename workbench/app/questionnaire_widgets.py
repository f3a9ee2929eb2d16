"""Widgets of the study's questionnaire items (workbench.participation.questionnaires): one function
draws one item by its type and returns what the participant chose; the core checks the answers.

Question and option texts come from a researcher's file, so they are shown as plain text (markdown
escaped), like everything else on the participant pages.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import streamlit as st

from workbench.app.safe_text import escape_markdown
from workbench.participation.questionnaires import Item
from workbench.participation.texts import ui


def widget_key(item: Item, items: Sequence[Item]) -> str:
    """``q_<name>``; the attention check is ``q_attention`` (``q_attention_<name>`` when a phase
    holds more than one)."""
    if item.type == "attention":
        several = sum(it.type == "attention" for it in items) > 1
        return f"q_attention_{item.name}" if several else "q_attention"
    return f"q_{item.name}"


def item_widget(item: Item, language: str, key: str) -> Any:
    """Draw ``item`` in ``language`` and return its value as the core expects it: an option value
    (single, likert, attention), a list of them (multiple), a number or None, text, True/False."""
    T = ui(language)
    label = escape_markdown(item.question.get(language))
    if item.type in ("single", "likert", "attention"):
        options = {v: escape_markdown(t) for v, t in item.options_in(language).items()}
        return st.radio(label, list(options), format_func=options.get, index=None, horizontal=True, key=key)
    if item.type == "multiple":
        options = item.options_in(language)
        return st.multiselect(
            label, list(options), format_func=options.get, key=key, placeholder=T["placeholder_many"]
        )
    if item.type == "number":
        # No min/max on the widget: the browser would refuse an out-of-range number in English and
        # send nothing; the core says it in the participant's language.
        return st.number_input(label, value=None, step=1 if item.integer else None, key=key)
    if item.type == "checkbox":
        return st.checkbox(label, key=key)
    return st.text_area(label, key=key, max_chars=item.max_chars)


def questionnaire_widgets(items: Sequence[Item], language: str) -> dict[str, Any]:
    """Draw every item (inside the caller's form) and return {item name: value}."""
    return {item.name: item_widget(item, language, widget_key(item, items)) for item in items}
