"""Accessibility helpers of the pages: readable captions and focus moved to each new step.

Streamlit redraws a page after every action and the browser's focus falls back to the page body, so
a keyboard or screen-reader user has to find their place again after consent, each message, each
rating and each questionnaire. ``move_focus`` puts the focus on the new step's heading or first
control, once per step. ``page_style`` raises Streamlit's captions (text at 60% opacity, 3.9:1 on white) to 7.9:1,
since the participant and staff pages show essential text as captions.
"""

from __future__ import annotations

import json

import streamlit as st

CAPTION_CSS = """<style>
[data-testid="stCaptionContainer"] { opacity: 1 !important; }
[data-testid="stCaptionContainer"], [data-testid="stCaptionContainer"] p { color: #4b5060 !important; }
</style>"""

# The script waits for an enabled, visible match (during a rerun the old page stays on screen for a
# moment: the message box is still there but disabled while a rating is open, and focusing a disabled
# element does nothing), focuses it, and then watches for a second: if the rerun's redraw drops the
# focus to the page body, it puts it back. It never takes the focus from an element the user chose.
_FOCUS_JS = """<script>(function(){
  var sel = %s, t0 = Date.now(), done = 0;
  function usable(el) {
    return el && el.offsetParent !== null && !el.disabled && el.getAttribute('aria-disabled') !== 'true';
  }
  function lost() {
    var a = document.activeElement;
    return !a || a === document.body || a === document.documentElement;
  }
  function go() {
    var el = document.querySelector(sel);
    if (usable(el) && (!done || lost())) {
      if (!el.matches('input,textarea,button,select,a[href],[tabindex]')) el.setAttribute('tabindex', '-1');
      el.focus();
      if (document.activeElement === el && !done) done = Date.now();
    }
    if (done && Date.now() - done > 1500) return;
    if (Date.now() - t0 < 8000) setTimeout(go, 100);
  }
  setTimeout(go, 50);
})();</script>"""

CHAT_INPUT = '[data-testid="stChatInputTextArea"]'
FIRST_FORM_CONTROL = '[data-testid="stForm"] input'


def page_style() -> None:
    """Captions dark enough for WCAG AA (once per page run; CSS only)."""
    st.html(CAPTION_CSS)


def heading_id(step: str) -> str:
    """The anchor of a step's heading (``st.header(..., anchor=heading_id(step))``)."""
    return f"step-{step}"


def move_focus(selector: str, key: object) -> None:
    """Focus the first element matching ``selector`` when ``key`` (the step the page shows) differs
    from the last run's: a rerun of the same step leaves the focus where the user put it."""
    if st.session_state.get("_a11y_focus") == key:
        return
    st.session_state["_a11y_focus"] = key
    st.html(_FOCUS_JS % json.dumps(selector), unsafe_allow_javascript=True)
