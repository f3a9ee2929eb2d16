"""The codebook: the behavioural dimensions, their label sets and definitions (EN/ZH).

``load_codebook()`` reads the bundled ``annotation/codebook.yaml``; ``load_codebook(extensions=...)``
adds extension files (the shells pass ``Settings.codebook_extensions``, from ``WORKBENCH_CODEBOOK``,
``os.pathsep``-separated). A file with ``extends: default`` adds its
dimensions to the bundled codebook; a file without it is a codebook of its own. Every problem is
reported as a ``UserInputError`` naming the file and the field, e.g.
``codebook.yaml: dimensions[3] (order).scale: unknown scale type 'ordnal' (use nominal or ordinal)``.
Unquoted values YAML would silently change are refused the same way (``labels: [Yes, No]`` would
become yes/no, ``version: 1.10`` would become 1.1): quote them (``labels: ["Yes", "No"]``).

Example::

    cb = load_codebook()
    dim = cb.get("politeness")
    dim.labels                # ['Polite', 'Neutral', 'Impolite']
    dim.definition["en"]      # or dim.definition.en / dim.definition.get("zh")
"""

from __future__ import annotations

import datetime
import hashlib
import json
import re
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from db.errors import UserInputError, yaml_problem
from db.settings import ENV_CODEBOOK

DEFAULT_PATH = Path(__file__).with_name("codebook.yaml")
ENV_VAR = ENV_CODEBOOK  # named in error messages
SCALES = ("nominal", "ordinal")
LEVELS = ("conversation", "turn")
GROUPS = ("strategy", "interaction_style", "evaluation", "other")
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")


class Text(BaseModel):
    """A text in English and (optionally) Chinese; ``t["en"]``, ``t.en`` and ``t.get(lang)`` all work."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    en: str
    zh: str | None = None

    def get(self, lang: str = "en", default: str | None = None) -> str | None:
        """The text in ``lang``, falling back to English."""
        value = getattr(self, lang, None) if lang in ("en", "zh") else None
        return value or self.en or default

    def __getitem__(self, lang: str) -> str:
        if lang not in ("en", "zh"):
            raise KeyError(lang)
        value = getattr(self, lang)
        if value is None:
            raise KeyError(lang)
        return value

    def __str__(self) -> str:
        return self.en


class Example(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    label: str
    text: Text
    note: Text | None = None


class Dimension(BaseModel):
    """One labelled dimension. ``labels`` is ordered (low to high for ordinal scales)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    group: str = "other"
    level: str = "conversation"
    scale: str = "nominal"
    labels: list[str] = Field(default_factory=list)
    title: Text | None = None
    definition: Text
    label_definitions: dict[str, Text] = Field(default_factory=dict)
    # Display names of label values in the labelling form (e.g. "是" for "yes"); the stored value,
    # the LLM prompt and the analysis keep the label itself. Display only: no version bump needed.
    label_titles: dict[str, Text] = Field(default_factory=dict)
    aspects: dict[str, list[Text]] = Field(default_factory=dict)
    examples: list[Example] = Field(default_factory=list)
    judged_on: Literal["user", "assistant"] = "user"
    turn_role: Literal["user", "assistant"] | None = None  # turn-level: which turns get a label

    @field_validator("labels", mode="before")
    @classmethod
    def _labels_as_strings(cls, v: Any) -> Any:
        # YAML reads 1..5 and yes/no as numbers/booleans; labels are stored as strings. (A file whose
        # unquoted values would not come back as written, e.g. Yes or 1.10, is refused before this.)
        if isinstance(v, list):
            return [_as_label(x) for x in v]
        return v

    @field_validator("label_definitions", "label_titles", mode="before")
    @classmethod
    def _keys_as_strings(cls, v: Any) -> Any:
        if isinstance(v, dict):
            return {_as_label(k): val for k, val in v.items()}
        return v

    @field_validator("name")
    @classmethod
    def _check_name(cls, v: str) -> str:
        if not _NAME_RE.match(v):
            raise ValueError(f"dimension name {v!r} must be lower_snake_case (letters, digits, _)")
        return v

    @field_validator("scale")
    @classmethod
    def _check_scale(cls, v: str) -> str:
        if v not in SCALES:
            raise ValueError(f"unknown scale type {v!r} (use {' or '.join(SCALES)})")
        return v

    @field_validator("level")
    @classmethod
    def _check_level(cls, v: str) -> str:
        if v not in LEVELS:
            raise ValueError(f"unknown level {v!r} (use {' or '.join(LEVELS)})")
        return v

    @field_validator("group")
    @classmethod
    def _check_group(cls, v: str) -> str:
        if v not in GROUPS:
            raise ValueError(f"unknown group {v!r} (use one of {', '.join(GROUPS)})")
        return v

    @model_validator(mode="after")
    def _check_labels(self) -> Dimension:
        if not self.labels:
            what = "an ordinal scale needs" if self.scale == "ordinal" else "a dimension needs"
            raise ValueError(f"{what} a non-empty, ordered list of labels")
        if len(self.labels) < 2:
            raise ValueError("labels: at least two labels are needed")
        dupes = sorted({x for x in self.labels if self.labels.count(x) > 1})
        if dupes:
            raise ValueError(f"labels: duplicate label(s) {', '.join(dupes)}")
        unknown = [k for k in self.label_definitions if k not in self.labels]
        if unknown:
            raise ValueError(
                f"label_definitions: {', '.join(map(repr, unknown))} not in labels {self.labels}"
            )
        unknown = [k for k in self.label_titles if k not in self.labels]
        if unknown:
            raise ValueError(f"label_titles: {', '.join(map(repr, unknown))} not in labels {self.labels}")
        bad = [e.label for e in self.examples if e.label not in self.labels]
        if bad:
            raise ValueError(f"examples: label(s) {', '.join(map(repr, bad))} not in labels {self.labels}")
        if self.level == "turn" and self.turn_role is None:
            object.__setattr__(self, "turn_role", "assistant")
        if self.level == "conversation" and self.turn_role is not None:
            raise ValueError("turn_role: only turn-level dimensions take a turn_role")
        return self

    # -- helpers -----------------------------------------------------------------------------------
    @property
    def is_ordinal(self) -> bool:
        return self.scale == "ordinal"

    def display_title(self, lang: str = "en") -> str:
        return self.title.get(lang) if self.title else self.name.replace("_", " ").capitalize()

    def label_definition(self, value: str, lang: str = "en") -> str | None:
        text = self.label_definitions.get(value)
        return text.get(lang) if text else None

    def label_title(self, value: str, lang: str = "en") -> str:
        """How the form shows ``value``: its ``label_titles`` entry in ``lang``, else the label itself."""
        text = self.label_titles.get(value)
        return (text.get(lang) if text else None) or value

    def aspect_names(self, scenario_key: str, lang: str = "en") -> list[str]:
        """Scenario-specific aspects (e.g. of ``order``) as plain strings; [] when none."""
        return [a.get(lang) for a in self.aspects.get(scenario_key, [])]

    def rank(self, value: str) -> int:
        """Position of ``value`` in the ordered label list (for ordinal statistics)."""
        return self.labels.index(_as_label(value))

    def json_schema(self) -> dict:
        """JSON schema of one value of this dimension (exactly the label set)."""
        return {"type": "string", "enum": list(self.labels)}


class Codebook(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    version: str
    languages: list[str] = Field(default_factory=lambda: ["en", "zh"])
    dimensions: list[Dimension]
    sources: list[str] = Field(default_factory=list)  # files it was read from

    def get(self, name: str) -> Dimension:
        for d in self.dimensions:
            if d.name == name:
                return d
        raise UserInputError(f"no dimension {name!r} in the codebook (known: {', '.join(self.names)})")

    def __contains__(self, name: object) -> bool:
        return any(d.name == name for d in self.dimensions)

    def __iter__(self):  # type: ignore[override]
        return iter(self.dimensions)

    def __len__(self) -> int:
        return len(self.dimensions)

    @property
    def names(self) -> list[str]:
        return [d.name for d in self.dimensions]

    def conversation_dimensions(self) -> list[Dimension]:
        return [d for d in self.dimensions if d.level == "conversation"]

    def turn_dimensions(self) -> list[Dimension]:
        return [d for d in self.dimensions if d.level == "turn"]

    def select(self, names: Iterable[str] | None) -> list[Dimension]:
        """The named dimensions (all when ``names`` is None); unknown names are a UserInputError."""
        if names is None:
            return list(self.dimensions)
        return [self.get(n) for n in names]


class _File(BaseModel):
    """What one YAML file may hold."""

    model_config = ConfigDict(extra="forbid")
    version: str | int | float
    extends: str | None = None
    languages: list[str] = Field(default_factory=lambda: ["en", "zh"])
    dimensions: list[dict] = Field(default_factory=list)


def _as_label(x: Any) -> Any:
    if isinstance(x, bool):  # YAML 1.1 reads yes/no as booleans
        return "yes" if x else "no"
    if isinstance(x, (int, float)):
        return str(x)
    return x


def _loc(loc: tuple, raw_dims: list) -> str:
    parts: list[str] = []
    for i, p in enumerate(loc):
        if isinstance(p, int):
            parts[-1:] = [f"{parts[-1] if parts else ''}[{p}]"]
            if i == 1 and loc[0] == "dimensions" and p < len(raw_dims) and isinstance(raw_dims[p], dict):
                name = raw_dims[p].get("name")
                if name:
                    parts[-1] += f" ({name})"
        else:
            parts.append(str(p))
    return ".".join(parts) or "(top level)"


class _Problems:
    """The problems found in one codebook file, each as ``file:line: field: message``; raised together
    (a researcher fixing a file sees every problem at once, not one per run)."""

    def __init__(self, path: Path, root: Any, raw_dims: list):
        self.path, self.root, self.raw_dims, self.lines = path, root, raw_dims, []
        self.misread: set[tuple] = set()  # parts already reported as misread by YAML: not again

    def add_misread(self, loc: tuple, message: str) -> None:
        self.misread.add(loc[:2])
        self.add(loc, message)

    def add(self, loc: tuple, message: str) -> None:
        line = _line_of(self.root, loc)
        where = f"{self.path}:{line}" if line else f"{self.path}"
        self.lines.append(f"{where}: {_loc(loc, self.raw_dims)}: {message}")

    def add_validation(self, exc: ValidationError, prefix: tuple = ()) -> None:
        for err in exc.errors():
            if (prefix + tuple(err["loc"]))[:2] in self.misread:
                continue
            self.add(prefix + tuple(err["loc"]), _msg(err))

    def raise_any(self) -> None:
        if len(self.lines) == 1:
            raise UserInputError(self.lines[0])
        if self.lines:
            raise UserInputError(
                f"{self.path}: {len(self.lines)} problems in the codebook:\n  " + "\n  ".join(self.lines)
            )


def _line_of(root: Any, loc: tuple) -> int | None:
    """The 1-based line of the deepest YAML node on the path ``loc`` (a key's own line for a field)."""
    node, line = root, None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            hit = next(((k, v) for k, v in node.value if getattr(k, "value", None) == part), None)
            if hit is None:
                break
            line, node = hit[0].start_mark.line + 1, hit[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    if line is None and root is not None:
        line = root.start_mark.line + 1
    return line


def _read_file(path: Path) -> tuple[_File, list[Dimension]]:
    if not path.is_file():
        raise UserInputError(f"codebook file {path} does not exist (check the path or {ENV_VAR})")
    text = path.read_text(encoding="utf-8")
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UserInputError(yaml_problem(path, exc, " in the codebook")) from None
    if not isinstance(raw, dict):
        raise UserInputError(f"{path}: a codebook is a mapping with 'version' and 'dimensions'")
    raw_dims = raw.get("dimensions") if isinstance(raw.get("dimensions"), list) else []
    problems = _Problems(path, yaml.compose(text, Loader=yaml.SafeLoader), raw_dims)
    _check_unquoted(problems)
    head = None
    try:
        head = _File.model_validate(raw)
    except ValidationError as exc:
        problems.add_validation(exc)
    if head is not None and head.extends not in (None, "default"):
        problems.add(("extends",), "only 'default' (the bundled codebook) can be extended")
    dims = _read_dimensions(raw_dims, problems)
    if head is not None and not raw_dims and head.extends is None:
        problems.add(("dimensions",), "a codebook needs at least one dimension")
    problems.raise_any()
    assert head is not None
    return head, dims


def _read_dimensions(raw_dims: list, problems: _Problems) -> list[Dimension]:
    dims: list[Dimension] = []
    first: dict[str, int] = {}
    for i, d in enumerate(raw_dims):
        if not isinstance(d, dict):
            problems.add(("dimensions", i), "each dimension is a mapping with name, scale, labels, ...")
            continue
        try:
            dim = Dimension.model_validate(d)
        except ValidationError as exc:
            problems.add_validation(exc, ("dimensions", i))
            continue
        if dim.name in first:
            problems.add(
                ("dimensions", i, "name"),
                f"duplicate dimension name {dim.name!r} (already dimensions[{first[dim.name]}]); "
                "rename one of them",
            )
        first.setdefault(dim.name, i)
        dims.append(dim)
    return dims


_YAML_STR, _YAML_NULL = "tag:yaml.org,2002:str", "tag:yaml.org,2002:null"


def _misread(node: Any, as_text) -> str | None:
    """How YAML misreads an unquoted value meant as text (``Yes``, ``On``, ``1.10``, a date), or None.

    ``as_text`` turns what YAML read back into the stored string; a value that comes back exactly as
    written (``1``, ``yes``, ``1.5``) is fine.
    """
    if not isinstance(node, yaml.ScalarNode) or node.tag in (_YAML_STR, _YAML_NULL):
        return None
    value = yaml.constructor.SafeConstructor().construct_object(node)
    if isinstance(value, (bool, int, float)):
        if as_text(value) == node.value:
            return None
        what = "a boolean" if isinstance(value, bool) else "a number"
        return f"YAML reads {node.value} as {what}, which becomes {as_text(value)!r}"
    what = "a date" if isinstance(value, (datetime.date, datetime.datetime)) else f"a {type(value).__name__}"
    return f"YAML reads {node.value} as {what}, not as text"


def _quoted(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _fields(node: Any) -> dict:
    if not isinstance(node, yaml.MappingNode):
        return {}
    return {k.value: v for k, v in node.value if isinstance(k, yaml.ScalarNode)}


def _check_unquoted(problems: _Problems) -> None:
    """Refuse values YAML would silently change (``labels: [Yes, No]`` -> yes/no, ``version: 1.10``
    -> 1.1), naming the file, line and field and how to quote them."""
    top = _fields(problems.root)
    problem = _misread(top.get("version"), str)
    if problem:
        problems.add_misread(("version",), f"{problem}; quote it: version: {_quoted(top['version'].value)}")
    dims = top.get("dimensions")
    for i, dim in enumerate(dims.value if isinstance(dims, yaml.SequenceNode) else []):
        f = _fields(dim)
        labels = f.get("labels")
        items = labels.value if isinstance(labels, yaml.SequenceNode) else []
        if any(_misread(x, _as_label) for x in items):
            problem = next(p for p in (_misread(x, _as_label) for x in items) if p)
            written = ", ".join(_quoted(y.value) if isinstance(y, yaml.ScalarNode) else "..." for y in items)
            problems.add_misread(
                ("dimensions", i, "labels"), f"{problem}; quote the labels: labels: [{written}]"
            )
        for name in ("label_definitions", "label_titles"):
            m = f.get(name)
            for key, _ in m.value if isinstance(m, yaml.MappingNode) else []:
                problem = _misread(key, _as_label)
                if problem:
                    problems.add_misread(
                        ("dimensions", i, name), f"{problem}; quote it: {_quoted(key.value)}: ..."
                    )
        examples = f.get("examples")
        for j, ex in enumerate(examples.value if isinstance(examples, yaml.SequenceNode) else []):
            label = _fields(ex).get("label")
            problem = _misread(label, _as_label)
            if problem:
                problems.add_misread(
                    ("dimensions", i, "examples", j, "label"),
                    f"{problem}; quote it: label: {_quoted(label.value)}",
                )


def _msg(err: dict) -> str:
    msg = err.get("msg", "invalid")
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if err.get("type") == "extra_forbidden":
        msg = "unknown field (check the spelling; see annotation/codebook.yaml for the fields)"
    if err.get("type") == "missing":
        msg = "required field is missing"
    return msg


def load_codebook(
    path: str | Path | Iterable[str | Path] | None = None, *, extensions: Iterable[str | Path] = ()
) -> Codebook:
    """Load and validate the codebook.

    ``path`` None: the bundled codebook plus the ``extensions`` files (the shells pass
    ``Settings.codebook_extensions``). Otherwise the given file(s) instead of the extensions; files
    with ``extends: default`` are added to the bundled codebook.
    """
    if path is None:
        paths = [Path(p) for p in extensions]
    elif isinstance(path, (str, Path)):
        paths = [Path(path)]
    else:
        paths = [Path(p) for p in path]
    key = tuple((str(p.resolve()), _mtime(p)) for p in paths)
    return _load_cached(key, _mtime(DEFAULT_PATH))


def _mtime(p: Path) -> tuple:
    # Part of the cache key, so an edited file is re-read (the app stays up while researchers edit).
    try:
        st = p.stat()
        return (st.st_mtime_ns, st.st_size)
    except OSError:
        return (-1, -1)


@lru_cache(maxsize=32)
def _load_cached(key: tuple, _default_mtime: tuple) -> Codebook:
    paths = [Path(p) for p, _ in key]
    files = [(p, *_read_file(p)) for p in paths]
    if not files or any(head.extends == "default" for _, head, _ in files):
        files.insert(0, (DEFAULT_PATH, *_read_file(DEFAULT_PATH)))
    standalone = [p for p, head, _ in files if head.extends is None]
    if len(standalone) > 1:
        raise UserInputError(
            f"{standalone[1]}: two stand-alone codebooks ({standalone[0]} and {standalone[1]}); "
            "add 'extends: default' to a file that only adds dimensions"
        )
    dims: list[Dimension] = []
    seen: dict[str, Path] = {}
    versions: list[str] = []
    languages: list[str] = []
    for p, head, file_dims in files:
        versions.append(str(head.version))
        languages += [lang for lang in head.languages if lang not in languages]
        for i, d in enumerate(file_dims):
            if d.name in seen:
                raise UserInputError(
                    f"{p}: dimensions[{i}].name: duplicate dimension name {d.name!r} "
                    f"(already defined in {seen[d.name]}); rename one of them"
                )
            seen[d.name] = p
            dims.append(d)
    version = "+".join(versions)
    if len(version) > 40:  # LabelSource.codebook_version holds 40 characters
        version = versions[0][:20] + "+" + hashlib.sha256(version.encode()).hexdigest()[:12]
    return Codebook(
        version=version, languages=languages, dimensions=dims, sources=[str(p) for p, _, _ in files]
    )
