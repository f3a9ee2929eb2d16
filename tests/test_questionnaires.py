"""Questionnaires of one's own: the file format, its errors, the flow through every phase, the CLI."""

from __future__ import annotations

import textwrap

import pytest
from sqlmodel import select

from db.errors import UserInputError
from db.models import Conversation, Participant, QuestionnaireResponse, Study, Turn
from tests.cli_helpers import run_cli
from tests.participation_helpers import make_study, profile_answers
from workbench import participation as P
from workbench.participation.questionnaires import (
    QuestionnaireFileError,
    load_questionnaires,
    parse_questionnaires,
)
from workbench.participation.texts import ParticipantError

# Every item type: a required consent checkbox, a number with bounds and a multiple choice before the
# study, a 1-7 Likert scale with anchors, a single choice, an attention check and free text after
# each task, an optional single choice after the study.
CUSTOM = textwrap.dedent(
    """\
    version: "lab-2"
    consent:
      - name: data_use
        type: checkbox
        question: {en: I agree that my messages are stored for research, zh: 我同意保存我的消息用于研究}
    pre_study:
      - name: ai_use_days
        type: number
        min: 0
        max: 7
        question: {en: Days a week you use AI assistants, zh: 你每周有几天使用 AI 助手}
      - name: tools
        type: multiple
        question: {en: Tools you have used}
        options:
          - {value: chatgpt, text: {en: ChatGPT}}
          - {value: claude, text: {en: Claude}}
          - {value: other, text: {en: Other, zh: 其他}}
    post_task:
      - name: trust
        type: likert
        scale: [1, 7]
        anchors: {1: {en: Not at all, zh: 完全不}, 7: {en: Completely, zh: 完全}}
        question: {en: "How much did you trust the assistant?", zh: 你有多信任助手？}
      - name: Detail
        type: single
        question: {en: "How detailed were the answers?"}
        options:
          - {value: detailed, text: {en: Detailed}}
          - {value: brief, text: {en: Brief}}
      - name: check
        type: attention
        once: true
        expected: "4"
        question: {en: Choose four}
        options:
          - {value: "3", text: {en: Three}}
          - {value: "4", text: {en: Four}}
      - name: comments
        type: text
        required: false
        max_chars: 20
        question: {en: Comments}
    post_study:
      - name: again
        type: single
        required: false
        question: {en: "Would you take part again?"}
        options:
          - {value: "yes", text: {en: "Yes"}}
          - {value: "no", text: {en: "No"}}
    """
)


def custom_questionnaires(tmp_path):
    path = tmp_path / "lab.yaml"
    path.write_text(CUSTOM, encoding="utf-8")
    return load_questionnaires(path)


def test_default_file_reproduces_the_reference_items():
    q = load_questionnaires()
    assert q.version == "reference-1" and not (q.consent or q.pre_study or q.post_study)
    assert [(i.name, i.type, i.required, i.once) for i in q.post_task] == [
        ("Memorization", "single", True, False),
        ("Detail", "single", True, False),
        ("Availability", "single", True, False),
        ("Diversity", "single", True, False),
        ("color", "attention", True, True),
        ("free_text", "text", False, False),
    ]
    # the stored values and texts the page showed before they came from the file
    items = {i.name: i for i in q.post_task}
    assert items["Memorization"].options_in("zh") == {"yes": "是", "no": "否"}
    assert items["Availability"].options_in("en") == {
        "very_useful": "Very useful",
        "somewhat": "Somewhat useful",
        "unusable": "Unusable",
    }
    assert items["Diversity"].options_in("zh") == {
        "diverse": "结果多样",
        "average": "一般",
        "single": "结果单一",
    }
    assert items["color"].expected == "blue" and items["color"].options_in("zh")["blue"] == "蓝色"
    assert items["Detail"].question.get("zh") == "助手的回答有多详细？"
    assert items["free_text"].question.get("en") == "Anything else you want to tell us (optional)"
    # the old names still import
    from workbench.participation.texts import ATTENTION_EXPECTED, ATTENTION_OPTIONS, POST_TASK_ITEMS

    assert list(POST_TASK_ITEMS) == ["Memorization", "Detail", "Availability", "Diversity"]
    assert ATTENTION_EXPECTED == "blue" and ATTENTION_OPTIONS["en"] == {
        "red": "Red",
        "blue": "Blue",
        "green": "Green",
    }


def test_invalid_file_lists_every_problem_with_file_line_and_field(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(
        textwrap.dedent(
            """\
            version: 1.10
            post_task:
              - name: ok
                type: slider
                question: {en: Q}
              - name: agree
                type: single
                question: {en: "Agree?"}
                options:
                  - {value: yes, text: {en: "Yes"}}
                  - {value: "no", txt: {en: "No"}}
              - name: trust
                type: likert
                scale: [1, 7]
                anchors: {0: {en: never}}
                question: {en: Trust}
              - name: age
                type: number
                min: 90
                max: 18
                options: []
                question: {en: Age}
              - name: check
                type: attention
                expected: purple
                question: {en: Pick red}
                options: [{value: red, text: {en: Red}}, {value: blue, text: {en: Blue}}]
            """
        ),
        encoding="utf-8",
    )
    with pytest.raises(QuestionnaireFileError) as err:
        load_questionnaires(path)
    problems = [str(p) for p in err.value.problems]
    expected = [
        ("1:10", "field 'version'", 'number 1.1; put it in quotes: version: "1.10"'),
        ("4:11", "field 'post_task[0].type'", "unknown item type 'slider' (use likert, single,"),
        ("10:17", "field 'post_task[1].options[0].value'", 'as a boolean; put it in quotes: value: "yes"'),
        ("11:9", "field 'post_task[1].options[1].text'", "required field is missing"),
        ("11:23", "field 'post_task[1].options[1].txt'", "unknown field"),
        ("15:14", "field 'post_task[2].anchors'", "point(s) 0 outside the scale 1..7"),
        ("21:14", "field 'post_task[3].options'", "only for single / multiple / attention items, not number"),
        ("25:15", "field 'post_task[4].expected'", "'purple' is not one of the option values"),
    ]
    assert len(problems) == len(expected), problems
    for (where, field, what), problem in zip(expected, problems, strict=True):
        assert problem.startswith(f"{path}:{where}: {field}:") and what in problem, problem
    assert str(err.value).startswith(f"8 problem(s) in the questionnaire file {path}:")
    # what one item cannot see: a repeated name, once outside post_task
    with pytest.raises(QuestionnaireFileError) as err:
        parse_questionnaires(
            'version: "1"\npre_study:\n  - {name: a, type: text, question: {en: A}, once: true}\n'
            "  - {name: a, type: text, question: {en: B}}\n",
            "dup.yaml",
        )
    assert [str(p) for p in err.value.problems] == [
        "dup.yaml:3:52: field 'pre_study[0].once': only post_task items are asked more than once, so 'once' "
        "is for them",
        "dup.yaml:4:12: field 'pre_study[1].name': duplicate item name 'a' in pre_study; rename one of them",
    ]
    with pytest.raises(QuestionnaireFileError, match=r"broken.yaml:2:1: invalid YAML"):
        parse_questionnaires("version: [1\n", "broken.yaml")


def _reply(session, p):
    """The assistant's reply to the pending message, stored in the test's session."""
    conv_id = session.exec(
        select(Conversation.id).where(
            Conversation.participant_id == p.id, Conversation.status == "in_progress"
        )
    ).one()
    n = len(session.exec(select(Turn).where(Turn.conversation_id == conv_id)).all())
    session.add(Turn(conversation_id=conv_id, index=n, role="assistant", content="A reply"))
    session.flush()
    return n


def test_custom_questionnaire_drives_the_flow(session, tmp_path):
    q = custom_questionnaires(tmp_path)
    make_study(
        session,
        settings={"tasks_per_participant": 2, "min_turns": 1, "questionnaires": q.model_dump(mode="json")},
    )
    [token] = P.create_invites(session, "pilot", 1)
    p = P.open_participant(session, token)
    view = P.participant_view(session, p)
    assert [i.name for i in view.questions] == ["data_use"]
    with pytest.raises(ParticipantError) as err:  # the required checkbox, as the participant reads it
        P.give_consent(session, p, True, {"data_use": False})
    assert (
        str(err.value)
        == "Please answer every question. Still open: “I agree that my messages are stored for research”"
    )
    P.give_consent(session, p, True, {"data_use": True})
    view = P.participant_view(session, p)
    assert view.step == "pre_study" and [i.name for i in view.questions] == ["ai_use_days", "tools"]
    for answers, message in (
        ({"tools": ["claude"]}, "Still open: “Days a week you use AI assistants”"),
        (
            {"ai_use_days": 9, "tools": ["claude"]},
            "Days a week you use AI assistants: please enter a number from 0 to 7",
        ),
        ({"ai_use_days": 2.5, "tools": ["claude"]}, "Please enter a whole number for: Days a week"),
        ({"ai_use_days": 2, "tools": ["bard"]}, "Please choose from the options for: Tools you have used"),
    ):
        with pytest.raises(ParticipantError, match=message):
            P.submit_pre_study(session, p, answers)
    P.submit_pre_study(session, p, {"ai_use_days": 3, "tools": ["other", "chatgpt"]})
    assert P.participant_view(session, p).step == "instructions"
    P.finish_instructions(session, p)
    P.submit_profile(session, p, profile_answers())
    for task in range(2):
        P.send_message(session, p, "Hello")
        P.rate_reply(session, p, _reply(session, p), "no", 4)
        P.finish_task(session, p)
        view = P.participant_view(session, p)
        asked = [i.name for i in view.questions]
        assert asked == (
            ["trust", "Detail", "check", "comments"] if task == 0 else ["trust", "Detail", "comments"]
        )
        assert view.ask_attention == (task == 0)
        if task == 0:
            with pytest.raises(ParticipantError) as err:
                P.submit_post_task(session, p, {"Detail": "brief"})
            assert (
                str(err.value)
                == "Please answer every question. Still open: “How much did you trust the assistant?” “Choose four”"
            )
            with pytest.raises(ParticipantError, match="Still open: “How much"):
                P.submit_post_task(session, p, {"trust": "8", "Detail": "brief", "check": "4"})
        P.submit_post_task(
            session,
            p,
            {"trust": str(6 - task), "Detail": "brief", "comments": "  far too long a comment  "},
            attention="3",
        )
    assert P.participant_view(session, p).step == "post_study"
    P.submit_post_study(session, p, {"again": None})  # optional: nothing stored
    view = P.participant_view(session, p)
    assert view.step == "done" and view.code == "COMPLETE" and p.status == "completed"
    rows = session.exec(select(QuestionnaireResponse).order_by(QuestionnaireResponse.id)).all()
    got = [(r.questionnaire, r.item, r.value, r.raw_value, r.conversation_id is not None) for r in rows]
    assert got[:4] == [
        ("consent", "consent", "yes", None, False),
        ("consent", "data_use", "yes", "yes", False),
        ("pre_study", "ai_use_days", "3", "3", False),
        ("pre_study", "tools", "chatgpt,other", "ChatGPT, Other", False),
    ]
    assert [g for g in got if g[0] != "profile"][4:] == [
        ("post_task", "trust", "6", "6", True),
        ("post_task", "Detail", "brief", "Brief", True),
        ("attention_check", "check", "fail", "3", True),
        ("post_task", "comments", "far too long a comme", "far too long a comme", True),
        ("post_task", "trust", "5", "5", True),
        ("post_task", "Detail", "brief", "Brief", True),
        ("post_task", "comments", "far too long a comme", "far too long a comme", True),
    ]
    assert rows[-1].question == "Comments"
    # the study kept its definition: editing the file later changes nothing for it
    (tmp_path / "lab.yaml").write_text(
        CUSTOM.replace('version: "lab-2"', 'version: "lab-3"'), encoding="utf-8"
    )
    study = session.get(Study, p.study_id)
    assert study.settings["questionnaires"]["version"] == "lab-2"


def test_chinese_texts_and_attention_setting(session, tmp_path):
    q = custom_questionnaires(tmp_path)
    make_study(
        session,
        settings={
            "tasks_per_participant": 1,
            "min_turns": 1,
            "attention_check": False,
            "questionnaires": q.model_dump(mode="json"),
        },
    )
    [token] = P.create_invites(session, "pilot", 1, language="zh")
    p = P.open_participant(session, token)
    with pytest.raises(ParticipantError) as err:
        P.give_consent(session, p, True, {})
    assert str(err.value) == "请回答所有问题。尚未回答：“我同意保存我的消息用于研究”"
    P.give_consent(session, p, False)  # declining asks nothing
    assert P.participant_view(session, p).step == "screened_out"
    trust = q.post_task[0]
    assert trust.options_in("zh") == {
        "1": "1 – 完全不",
        **{str(k): str(k) for k in range(2, 7)},
        "7": "7 – 完全",
    }
    # attention_check off: the file's attention item is not asked
    from workbench.participation.flow import phase_items
    from workbench.studies import study_settings

    settings = study_settings(session.get(Study, p.study_id))
    assert [i.name for i in phase_items(settings, p, "post_task")] == ["trust", "Detail", "comments"]


def test_cli_validate_show_and_study_create(use_db, tmp_path, capsys):
    path = tmp_path / "lab.yaml"
    path.write_text(CUSTOM, encoding="utf-8")
    code, out, _ = run_cli(["questionnaires", "validate", str(path)], capsys)
    assert code == 0 and "lab-2: consent 1, pre_study 2, post_task 4, post_study 1 item(s)" in out
    code, out, _ = run_cli(["questionnaires", "show", "--lang", "zh"], capsys)
    assert (
        code == 0 and "post_task  Memorization  [single, required]  助手是否忘记了你之前说过的内容？" in out
    )
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        'version: "1"\npost_task:\n  - {name: 1x, type: text, question: {en: Q}}\n', encoding="utf-8"
    )
    code, _, err = run_cli(["questionnaires", "validate", str(bad)], capsys)
    assert code == 2 and f"{bad}:3:12: field 'post_task[0].name': '1x': a name starts with a letter" in err
    assert "Traceback" not in err
    code, out, err = run_cli(
        [
            "study",
            "create",
            "s1",
            "--assistant-model",
            "openai/gpt-4o-mini",
            "--scenarios",
            "recipe_planning",
            "--questionnaires",
            str(path),
        ],
        capsys,
    )
    assert code == 0 and "questionnaires lab-2" in out, err
    code, _, err = run_cli(
        ["study", "create", "s2", "--assistant-model", "openai/gpt-4o-mini", "--questionnaires", str(bad)],
        capsys,
    )
    assert code == 2 and "field 'post_task[0].name'" in err
    code, out, _ = run_cli(["study", "create", "s3", "--assistant-model", "openai/gpt-4o-mini"], capsys)
    assert code == 0 and "questionnaires reference-1" in out
    from sqlmodel import Session

    from db.engine import ready_engine

    with Session(ready_engine(use_db)) as s:
        stored = {st.name: st.settings["questionnaires"] for st in s.exec(select(Study)).all()}
    assert set(stored) == {"s1", "s3"} and stored["s1"]["source"] == "lab.yaml"
    assert [i["name"] for i in stored["s1"]["pre_study"]] == ["ai_use_days", "tools"]
    assert stored["s3"]["version"] == "reference-1"


def test_uploaded_file_on_the_studies_page_core(session, tmp_path):
    from workbench.studies import create_study_from_packs

    study, _ = create_study_from_packs(
        session,
        "up",
        "openai/gpt-4o-mini",
        ["travel_planning"],
        0,
        "en",
        None,
        {},
        questionnaires_file=("lab.yaml", CUSTOM.encode()),
    )
    assert study.settings["questionnaires"]["version"] == "lab-2"
    with pytest.raises(UserInputError, match=r"up.yaml:1:\d+: field 'version'"):
        create_study_from_packs(
            session,
            "up2",
            "openai/gpt-4o-mini",
            ["travel_planning"],
            0,
            "en",
            None,
            {},
            questionnaires_file=("up.yaml", b"version: 2\n"),
        )
    assert session.exec(select(Participant)).all() == []


def test_participant_page_asks_a_likert_item_before_the_study(tmp_path):
    """The page draws a custom item type (a 1-7 scale with anchors) and the answer is stored."""
    AppTest = pytest.importorskip("streamlit.testing.v1").AppTest
    from pathlib import Path

    from sqlmodel import Session

    from db.engine import ready_engine
    from db.settings import Settings

    eng = ready_engine(Settings.from_env().db_url)
    q = parse_questionnaires(
        'version: "scale-1"\npre_study:\n  - name: ai_trust\n    type: likert\n    scale: [1, 7]\n'
        "    anchors: {1: {en: Not at all, zh: 完全不}, 7: {en: Completely, zh: 完全}}\n"
        '    question: {en: "How much do you trust AI assistants?", zh: 你有多信任 AI 助手}\n',
        "scale.yaml",
    )
    with Session(eng) as s:
        make_study(s, settings={"interface_language": "zh", "questionnaires": q.model_dump(mode="json")})
        [token] = P.create_invites(s, "pilot", 1)
        s.commit()
        pid = s.exec(select(Participant.id)).one()
    main = str(Path(__file__).resolve().parent.parent / "workbench" / "app" / "main.py")
    at = AppTest.from_file(main, default_timeout=30)
    at.query_params["t"] = token
    at.run()
    at.button[0].click().run()  # agree
    assert not at.exception, at.exception
    assert at.header[0].value == "开始之前"
    radio = at.radio(key="q_ai_trust")
    assert (
        radio.label == "你有多信任 AI 助手" and radio.options[0] == "1 – 完全不" and len(radio.options) == 7
    )
    at.button[0].click().run()  # nothing chosen: refused in Chinese, still on the page
    assert "尚未回答：“你有多信任 AI 助手”" in at.error[0].value
    radio = at.radio(key="q_ai_trust")
    radio.set_value("6")
    at.button[0].click().run()
    assert not at.exception, at.exception
    with Session(eng) as s:
        assert s.get(Participant, pid).state["step"] == "instructions"
        row = s.exec(select(QuestionnaireResponse).where(QuestionnaireResponse.item == "ai_trust")).one()
        assert (row.questionnaire, row.value, row.raw_value) == ("pre_study", "6", "6")


def test_readme_example_is_valid():
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    start = readme.index('version: "lab-1"')
    q = parse_questionnaires(readme[start : readme.index("```", start)], "README.md")
    assert {i.type for p in ("consent", "pre_study", "post_task") for i in q.items(p)} == {
        "checkbox",
        "number",
        "multiple",
        "likert",
        "attention",
        "text",
    }


def test_a_study_without_post_task_items_goes_straight_on(session):
    with pytest.raises(
        QuestionnaireFileError,
        match=r"x.yaml:3:39: field 'post_study\[0\].expected': only for attention items, not number",
    ):
        parse_questionnaires(
            'version: "b"\npost_study:\n  - {name: n, type: number, expected: 4, question: {en: N}}\n',
            "x.yaml",
        )
    q = parse_questionnaires('version: "bare"\npost_task:\n', "bare.yaml")
    assert q.post_task == []
    make_study(
        session,
        settings={"tasks_per_participant": 1, "min_turns": 1, "questionnaires": q.model_dump(mode="json")},
    )
    [token] = P.create_invites(session, "pilot", 1)
    p = P.open_participant(session, token)
    P.give_consent(session, p, True)
    P.finish_instructions(session, p)
    P.submit_profile(session, p, profile_answers())
    P.send_message(session, p, "Hello")
    P.rate_reply(session, p, _reply(session, p), "yes", 2)
    P.finish_task(session, p)
    assert P.participant_view(session, p).step == "done" and p.status == "completed"
