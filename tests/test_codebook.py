"""The codebook loader on the bundled file, on extensions and on broken files."""

from __future__ import annotations

import json
import re
import textwrap
from collections import defaultdict
from pathlib import Path

import pytest

from annotation.codebook import DEFAULT_PATH, load_codebook
from db.errors import UserInputError
from db.settings import Settings

REFERENCE_DIMENSIONS = [
    "problem_solving",
    "order",
    "question_broadness",
    "context_dependency",
    "explanation",
    "promise",
    "feedback",
    "politeness",
    "formality",
    "utility",
    "operability",
]


def write(tmp_path: Path, text: str, name: str = "cb.yaml") -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text), encoding="utf-8")
    return p


def test_bundled_codebook_has_the_reference_dimensions():
    cb = load_codebook()
    assert cb.version
    assert [d.name for d in cb.conversation_dimensions()] == REFERENCE_DIMENSIONS
    hall = cb.get("hallucination")
    assert (
        hall.level == "turn" and hall.turn_role == "assistant" and hall.labels == ["yes", "no", "cant_tell"]
    )
    assert cb.get("question_broadness").labels == ["1", "2", "3", "4", "5"]
    assert cb.get("question_broadness").is_ordinal and cb.get("context_dependency").is_ordinal
    assert cb.get("problem_solving").labels == ["AllInOne", "StepByStep"]
    assert {d.group for d in cb} == {"strategy", "interaction_style", "evaluation"}
    assert cb.get("order").aspect_names("travel_planning") == ["destination", "accommodation", "transport"]
    assert set(cb.get("order").aspects) >= {
        "travel_planning",
        "recipe_planning",
        "preparing_gifts",
        "skills_learning_planning",
    }


def test_every_label_is_defined_in_both_languages():
    for d in load_codebook():
        assert d.definition.en and d.definition.zh, d.name
        assert d.title and d.title.zh, d.name
        for value in d.labels:
            text = d.label_definitions[value]
            assert text.en and text.zh, (d.name, value)


def test_impolite_has_its_own_definition():
    # The reference prompt copied another label's definition into Impolite.
    pol = load_codebook().get("politeness")
    texts = [pol.label_definitions[v].en for v in pol.labels]
    assert len(set(texts)) == len(texts)
    imp = pol.label_definitions["Impolite"]
    assert "rude" in imp.en.lower() and "粗鲁" in imp.zh
    all_other = [
        t.en
        for d in load_codebook()
        for v, t in d.label_definitions.items()
        if (d.name, v) != ("politeness", "Impolite")
    ]
    assert imp.en not in all_other


def test_label_values_match_the_released_data(recllmsim):
    """Every value the released files use is in the codebook (and nothing else is needed)."""
    cb = load_codebook()
    seen = defaultdict(set)
    files = (
        sorted(recllmsim.glob("LLM_agent_user/*/*.json"))[:150]
        + sorted(recllmsim.glob("human_exp_V2/*/*/*.json"))[:150]
    )
    for f in files:
        data = json.loads(f.read_text(encoding="utf-8"))
        for key, block in data.items():
            if (
                key.startswith("strategy")
                and isinstance(block, dict)
                and isinstance(block.get("final"), dict)
            ):
                for dim, value in block["final"].items():
                    seen[dim].add(str(value))
    assert set(seen) == set(REFERENCE_DIMENSIONS)
    for dim, values in seen.items():
        assert values <= set(cb.get(dim).labels), (dim, values)


def test_extension_via_environment_adds_a_dimension(tmp_path, monkeypatch):
    ext = write(
        tmp_path,
        """
        version: "x1"
        extends: default
        dimensions:
          - name: humour
            group: interaction_style
            scale: ordinal
            definition: {en: "How funny the user is.", zh: "用户有多幽默。"}
            labels: [1, 2, 3]
    """,
    )
    monkeypatch.setenv("WORKBENCH_CODEBOOK", str(ext))
    assert load_codebook().names[-1] != "humour"  # the core reads no environment
    cb = load_codebook(extensions=Settings.from_env().codebook_extensions)
    assert cb.names[-1] == "humour" and "politeness" in cb
    assert cb.get("humour").labels == ["1", "2", "3"]
    assert cb.version == "1.1+x1"
    assert str(DEFAULT_PATH) in cb.sources and str(ext) in cb.sources


def test_standalone_codebook_by_path(tmp_path):
    p = write(
        tmp_path,
        """
        version: 2
        dimensions:
          - name: flagged
            level: turn
            definition: {en: "Anything odd?"}
            labels: [yes, no]
    """,
    )
    cb = load_codebook(p)
    assert cb.names == ["flagged"] and cb.version == "2"
    d = cb.get("flagged")
    assert d.labels == ["yes", "no"] and d.turn_role == "assistant"
    assert d.definition.get("zh") == "Anything odd?"  # falls back to English


@pytest.mark.parametrize(
    "body, expected",
    [
        (
            """
        version: 1
        dimensions:
          - name: a
            scale: ordnal
            definition: {en: x}
            labels: ["1", "2"]
        """,
            r"dimensions\[0\] \(a\)\.scale: unknown scale type 'ordnal'",
        ),
        (
            """
        version: 1
        dimensions:
          - name: a
            definition: {en: x}
            labels: [p, q]
          - name: a
            definition: {en: y}
            labels: [p, q]
        """,
            r"cb\.yaml:7: dimensions\[1\] \(a\)\.name: duplicate dimension name 'a'",
        ),
        (
            """
        version: 1
        dimensions:
          - name: a
            scale: ordinal
            definition: {en: x}
        """,
            r"dimensions\[0\] \(a\): an ordinal scale needs a non-empty, ordered list of labels",
        ),
        (
            """
        version: 1
        dimensions:
          - name: a
            definition: {en: x}
            labels: [p, q]
            label_definitions: {r: {en: z}}
        """,
            r"label_definitions: 'r' not in labels",
        ),
        (
            """
        version: 1
        dimensions:
          - name: a
            definition: {en: x}
            labels: [p, q]
            label_titles: {s: {en: z}}
        """,
            r"dimensions\[0\] \(a\): label_titles: 's' not in labels",
        ),
        (
            """
        version: 1
        dimensions:
          - name: a
            definition: {en: x}
            labels: [p, q]
            lables: [p]
        """,
            r"dimensions\[0\] \(a\)\.lables: unknown field",
        ),
        (
            """
        version: 1
        dimensions:
          - name: a
            labels: [p, q]
        """,
            r"dimensions\[0\] \(a\)\.definition: required field is missing",
        ),
        (
            """
        version: 1
        dimensions:
          - name: Bad Name
            definition: {en: x}
            labels: [p, q]
        """,
            r"\.name: dimension name 'Bad Name' must be lower_snake_case",
        ),
        (
            """
        version: 1
        dimensions:
          - name: a
            level: utterance
            definition: {en: x}
            labels: [p, q]
        """,
            r"\.level: unknown level 'utterance'",
        ),
        (
            """
        version: 1
        dimensions:
          - name: a
            definition: {en: x}
            labels: [p, p]
        """,
            r"duplicate label\(s\) p",
        ),
        (
            """
        dimensions: []
        """,
            r"version: required field is missing",
        ),
        (
            """
        version: 1
        dimensions: [
        """,
            r"invalid YAML",
        ),
    ],
)
def test_bad_files_name_file_and_field(tmp_path, body, expected):
    p = write(tmp_path, body)
    with pytest.raises(UserInputError, match=expected) as info:
        load_codebook(p)
    assert str(p) in str(info.value)


def test_duplicate_with_the_bundled_codebook(tmp_path):
    p = write(
        tmp_path,
        """
        version: 1
        extends: default
        dimensions:
          - name: politeness
            definition: {en: x}
            labels: [p, q]
    """,
    )
    with pytest.raises(
        UserInputError, match=r"duplicate dimension name 'politeness' \(already defined in .*codebook.yaml\)"
    ):
        load_codebook(p)


def test_missing_file_and_unknown_dimension(tmp_path):
    with pytest.raises(UserInputError, match="does not exist"):
        load_codebook(tmp_path / "nope.yaml")
    with pytest.raises(UserInputError, match="no dimension 'nope'"):
        load_codebook().get("nope")


def test_reload_after_edit(tmp_path):
    p = write(
        tmp_path,
        """
        version: 1
        dimensions:
          - {name: a, definition: {en: x}, labels: [p, q]}
    """,
    )
    assert load_codebook(p).names == ["a"]
    import os

    p.write_text(
        "version: 2\ndimensions:\n  - {name: b, definition: {en: x}, labels: [p, q]}\n", encoding="utf-8"
    )
    os.utime(p, (p.stat().st_atime, p.stat().st_mtime + 5))
    assert load_codebook(p).names == ["b"]


def test_label_titles_are_display_only():
    """The form shows a value's display name in its language; the stored label stays the value."""
    cb = load_codebook()
    h = cb.get("hallucination")
    assert h.labels == ["yes", "no", "cant_tell"]
    assert [h.label_title(v, "zh") for v in h.labels] == ["是", "否", "无法判断"]
    assert h.label_title("cant_tell", "en") == "can't tell"
    assert cb.get("politeness").label_title("Polite", "zh") == "礼貌"
    assert cb.get("politeness").label_title("Polite", "en") == "Polite"
    assert cb.get("question_broadness").label_title("3", "zh") == "3"  # no title: the label itself


@pytest.mark.parametrize(
    "field, expected",
    [
        (
            "labels: [Yes, No]",
            (
                r"dimensions\[0\] \(a\)\.labels: YAML reads Yes as a boolean, which becomes 'yes'; "
                r'quote the labels: labels: \["Yes", "No"\]'
            ),
        ),
        (
            "labels: [On, Off]",
            (
                r"\(a\)\.labels: YAML reads On as a boolean, which becomes 'yes'; "
                r'quote the labels: labels: \["On", "Off"\]'
            ),
        ),
        (
            "labels: [True, False]",
            r'\(a\)\.labels: YAML reads True as a boolean.*labels: \["True", "False"\]',
        ),
        ("labels: [low, 1.10]", r"\(a\)\.labels: YAML reads 1\.10 as a number, which becomes '1\.1'"),
        ("labels: [p, 2024-01-01]", r"\(a\)\.labels: YAML reads 2024-01-01 as a date, not as text"),
        (
            "labels: [p, q]\n    label_titles: {Yes: {en: z}}",
            r'\(a\)\.label_titles: YAML reads Yes as a boolean.*quote it: "Yes": \.\.\.',
        ),
        (
            "labels: [p, q]\n    examples: [{label: Off, text: {en: t}}]",
            r'\(a\)\.examples\[0\]\.label: YAML reads Off as a boolean.*quote it: label: "Off"',
        ),
    ],
)
def test_unquoted_values_yaml_would_change_are_refused(tmp_path, field, expected):
    """YAML 1.1 reads Yes/On/True as booleans and 1.10 as 1.1: refused with the file, field and fix."""
    p = write(tmp_path, f'version: "1"\ndimensions:\n  - name: a\n    definition: {{en: x}}\n    {field}\n')
    with pytest.raises(UserInputError, match=expected) as info:
        load_codebook(p)
    assert re.match(rf"{re.escape(str(p))}:[56]: ", str(info.value)) and "\n" not in str(info.value)


def test_unquoted_version_that_yaml_would_change_is_refused(tmp_path):
    body = "version: {}\ndimensions:\n  - {{name: a, definition: {{en: x}}, labels: [p, q]}}\n"
    p = write(tmp_path, body.format("1.10"))
    with pytest.raises(
        UserInputError,
        match=r"version: YAML reads 1\.10 as a number, which becomes '1\.1'; "
        r'quote it: version: "1\.10"',
    ) as info:
        load_codebook(p)
    assert str(p) in str(info.value)
    # Values that come back exactly as written stay accepted; quoted ones are kept as written.
    for version, expected in (("2", "2"), ("1.5", "1.5"), ('"1.10"', "1.10")):
        p = write(tmp_path, body.format(version), name=f"v{expected}.yaml")
        assert load_codebook(p).version == expected
    quoted = 'version: "1"\ndimensions:\n  - {name: a, definition: {en: x}, labels: ["Yes", "No", 3, yes]}\n'
    p = write(tmp_path, quoted, name="quoted.yaml")
    assert load_codebook(p).get("a").labels == ["Yes", "No", "3", "yes"]
    assert load_codebook(DEFAULT_PATH).version == "1.1"  # the bundled codebook still loads


def test_every_problem_of_a_file_is_reported_at_once(tmp_path, capsys):
    """A file with four mistakes used to need four runs (only the first was reported): now all of
    them come in one error, each with its file:line."""
    from tests.cli_helpers import run_cli

    body = """version: 1.10
dimensions:
  - name: a
    scale: ordnal
    definition: {en: x}
    labels: ["1", "2"]
  - name: b
    labels: [p, q]
  - name: c
    definition: {en: x}
    labels: [Yes, No]
  - name: c
    definition: {en: x}
    labels: [p, q]
"""
    p = write(tmp_path, body)
    with pytest.raises(UserInputError) as info:
        load_codebook(p)
    lines = str(info.value).splitlines()
    assert lines[0] == f"{p}: 5 problems in the codebook:"
    expected = [
        f"{p}:1: version: YAML reads 1.10 as a number",
        f"{p}:11: dimensions[2] (c).labels: YAML reads Yes as a boolean",
        f"{p}:4: dimensions[0] (a).scale: unknown scale type 'ordnal'",
        f"{p}:7: dimensions[1] (b).definition: required field is missing",
        f"{p}:12: dimensions[3] (c).name: duplicate dimension name 'c'",
    ]
    assert len(lines) == 6
    for line, start in zip(lines[1:], expected):
        assert line.strip().startswith(start), (line, start)
    code, _, err = run_cli(["annotate", "codebook", str(p)], capsys)
    assert code == 2 and "Traceback" not in err and "5 problems" in err and "dimensions[3] (c)" in err
