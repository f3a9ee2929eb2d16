"""Researcher: create a study from the scenario packs, change its settings, make invite links."""

import streamlit as st

from db.engine import session_scope
from db.errors import UserInputError
from db.repo import study_names
from workbench.app.auth import require_role
from workbench.app.common import engine, escape_markdown, run_action, settings, show_flash
from workbench.config import public_url
from workbench.llm import check_model_name
from workbench.participation.entry import create_invites, invite_url, prolific_url
from workbench.studies import available_scenarios, create_study_from_packs, get_settings, update_settings

require_role("researcher")
st.title("Study setup")
st.caption(
    "Create a study, change its settings, make invite links. Home lists every study with its conversations."
)
show_flash()
eng = engine()
with session_scope(eng) as s:
    names = study_names(s)

# The open tab is kept in the address (?tab=...), so saving or reloading stays on it.
create_tab, settings_tab, invite_tab = st.tabs(
    ["Create", "Settings", "Invite links"], key="tab", bind="query-params"
)

with create_tab:
    try:
        scenario_keys = available_scenarios(settings().scenario_dirs)
    except UserInputError as exc:  # an invalid pack (scenarios.LibraryError) or a missing pack folder
        scenario_keys = []
        st.warning(escape_markdown(str(exc)))
    # The outcome first, where the eye is (above the form, not below its fold).
    if st.session_state.get("_created"):
        st.success(escape_markdown(st.session_state.pop("_created")))
    if st.session_state.get("_created_warning"):
        st.warning(
            escape_markdown(
                st.session_state.pop("_created_warning")
                + ". Participants get no reply until it is set where the app runs."
            )
        )
    # A new form (fresh, empty widgets) after each created study, so a second click cannot hit
    # "already exists"; after an error the form keeps what was typed.
    with st.form(f"create_study_{st.session_state.get('_create_round', 0)}"):
        name = st.text_input("Study name")
        model = st.text_input("Assistant model (provider/model)", value=settings().default_model)
        chosen = st.multiselect("Scenarios (none = the four reference scenarios)", scenario_keys)
        profiles = st.number_input("Pool profiles to sample (0 = none)", min_value=0, max_value=100, value=0)
        language = st.selectbox("Language", ["en", "zh"])
        system_prompt = st.text_area("Assistant system prompt (optional)")
        c1, c2, c3 = st.columns(3)
        tasks = c1.number_input("Tasks per participant", 1, 10, 2)
        min_turns = c2.number_input("Minimum turns", 1, 50, 2)
        max_turns = c3.number_input("Maximum turns", 1, 100, 10)
        mode = st.selectbox(
            "Profiles in human sessions",
            ["participant", "assigned"],
            help="participant: people fill in the profile questionnaire; assigned: the "
            "condition's profile is shown to them",
        )
        q_file = st.file_uploader(
            "Questionnaires (YAML, optional; default: the reference study's items)", type=["yaml", "yml"]
        )
        if st.form_submit_button("Create study", type="primary"):
            result = run_action(
                create_study_from_packs,
                name,
                model,
                chosen,
                int(profiles),
                language,
                system_prompt,
                {
                    "tasks_per_participant": int(tasks),
                    "min_turns": int(min_turns),
                    "max_turns": int(max_turns),
                    "profile_mode": mode,
                    "interface_language": language,
                },
                extra_dirs=settings().scenario_dirs,
                questionnaires_file=(q_file.name, q_file.getvalue()) if q_file else None,
            )
            if result is not None:
                st.session_state["_created"] = (
                    f"Created study {result[0].name!r} with {result[1]} conditions."
                )
                st.session_state["_created_warning"] = check_model_name(model.strip())
                st.session_state["_create_round"] = st.session_state.get("_create_round", 0) + 1
            st.rerun()

with settings_tab:
    if not names:
        st.info("No studies yet.")
    else:
        study = st.selectbox("Study", names, key="settings_study")
        with session_scope(eng) as s:
            cur = get_settings(s, study)
        with st.form("settings"):
            c1, c2, c3 = st.columns(3)
            tasks = c1.number_input("Tasks per participant", 1, 10, cur.tasks_per_participant)
            min_turns = c2.number_input("Minimum turns", 1, 50, cur.min_turns)
            max_turns = c3.number_input("Maximum turns", 1, 100, cur.max_turns)
            c4, c5, c6 = st.columns(3)
            mode = c4.selectbox(
                "Profile mode",
                ["participant", "assigned"],
                index=["participant", "assigned"].index(cur.profile_mode),
            )
            lang = c5.selectbox(
                "Interface language", ["en", "zh"], index=["en", "zh"].index(cur.interface_language)
            )
            idle = c6.number_input("Idle timeout (minutes)", 1, 24 * 60, cur.idle_timeout_minutes)
            quota = st.number_input(
                "Human conversations per condition (0 = unlimited)", 0, 10_000, cur.quota_per_condition or 0
            )
            consent = st.text_area("Consent text", cur.consent_text)
            instructions = st.text_area("Instructions", cur.instructions_text)
            contact = st.text_input(
                "Contact for participants (shown when a session has expired)", cur.contact_text or ""
            )
            c7, c8 = st.columns(2)
            completion = c7.text_input("Completion code", cur.completion_code)
            screenout = c8.text_input("Screen-out code", cur.screenout_code)
            prolific = st.text_input(
                "Prolific completion URL (code appended, or {code} replaced)",
                cur.prolific_completion_url or "",
            )
            prolific_id = st.text_input(
                "Prolific STUDY_ID (Prolific links are accepted only for the study naming it)",
                cur.prolific_study_id or "",
            )
            redirect_s = st.number_input(
                "Seconds before Prolific participants are sent back (0 = button only)",
                0,
                600,
                cur.prolific_redirect_seconds,
            )
            attention = st.checkbox("Attention check", cur.attention_check)
            if st.form_submit_button("Save settings", type="primary"):
                changes = {
                    "tasks_per_participant": int(tasks),
                    "min_turns": int(min_turns),
                    "max_turns": int(max_turns),
                    "profile_mode": mode,
                    "interface_language": lang,
                    "idle_timeout_minutes": int(idle),
                    "quota_per_condition": int(quota) or None,
                    "consent_text": consent,
                    "instructions_text": instructions,
                    "contact_text": contact.strip() or None,
                    "completion_code": completion,
                    "screenout_code": screenout,
                    "prolific_completion_url": prolific or None,
                    "prolific_study_id": prolific_id or None,
                    "attention_check": attention,
                    "prolific_redirect_seconds": int(redirect_s),
                }
                if run_action(update_settings, study, changes) is not None:
                    st.session_state["_saved"] = "Settings saved."
                st.rerun()
        if st.session_state.get("_saved"):
            st.success(st.session_state.pop("_saved"))

with invite_tab:
    if names:
        study = st.selectbox("Study", names, key="invite_study")
        # WORKBENCH_PUBLIC_URL, else the address this page is open at (behind a proxy: the public one)
        base = st.text_input(
            "Public address of this app", value=public_url(st.context.url, configured=settings().public_url)
        )
        n = st.number_input("How many invite links", 1, 1000, 10)
        if st.button("Create invite links", type="primary"):
            tokens = run_action(create_invites, study, int(n))
            if tokens:
                st.session_state["_links"] = (study, "\n".join(invite_url(base, t) for t in tokens))
            st.rerun()
        if st.session_state.get("_links"):
            # Kept with the study they belong to: switching the study above does not relabel them.
            links_study, links = st.session_state["_links"]
            st.warning(
                f"Copy these links for study {escape_markdown(repr(links_study))} now: only their hashes "
                "are stored, they cannot be shown again."
            )
            st.text_area(f"Invite links for {links_study}", links, height=200)
            st.download_button("Download links", links, file_name=f"{links_study}-invites.txt")
        st.caption("Prolific study URL (Prolific fills in the ids):")
        st.code(prolific_url(base, study), language=None, wrap_lines=True)
