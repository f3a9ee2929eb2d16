"""Load, validate and sync the scenario library.

The library is every pack file (``*.yaml``/``*.yml``) in the bundled ``scenarios/packs/`` directory
plus the directories passed in (the shells pass ``Settings.scenario_dirs``, read from
``WORKBENCH_SCENARIO_DIRS``), so a researcher adds a scenario by adding a file. Loading never touches the database;
``sync_library`` upserts the rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from pydantic import ValidationError

from db.errors import UserInputError
from db.settings import ENV_SCENARIO_DIRS  # noqa: F401  (re-exported by scenarios)
from scenarios.schema import KINDS, ProfileField, ProfileFields, ProfilePool, ProfileSpec, ScenarioSpec

PACKS_DIR = Path(__file__).resolve().parent / "packs"


@dataclass
class Problem:
    """One thing wrong with one file: where and which field."""

    path: Path
    message: str
    line: int | None = None
    column: int | None = None
    field: str | None = None

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else str(self.path)
        if self.line and self.column:
            where += f":{self.column}"
        fld = f" field '{self.field}':" if self.field else ""
        return f"{where}:{fld} {self.message}"


class LibraryError(UserInputError):
    """One or more pack files are invalid (exit status 2)."""

    def __init__(self, problems: Sequence[Problem]):
        self.problems = list(problems)
        lines = "\n".join(f"  {p}" for p in self.problems)
        super().__init__(
            f"{len(self.problems)} problem(s) in the scenario library; fix the file(s) and run "
            f"`workbench scenarios validate PATH`:\n{lines}"
        )


@dataclass
class Library:
    """Validated scenarios, profiles and profile fields, with the file each came from."""

    scenarios: dict[str, ScenarioSpec] = field(default_factory=dict)
    profiles: dict[str, ProfileSpec] = field(default_factory=dict)
    profile_fields: list[ProfileField] = field(default_factory=list)
    sources: dict[str, Path] = field(default_factory=dict)  # "scenario:<key>" / "profile:<key>" -> file
    files: list[Path] = field(default_factory=list)

    def scenario(self, key: str) -> ScenarioSpec:
        try:
            return self.scenarios[key]
        except KeyError:
            raise UserInputError(
                f"unknown scenario {key!r}; known scenarios: {', '.join(sorted(self.scenarios)) or 'none'}"
            ) from None

    def reference_scenarios(self) -> list[str]:
        return [k for k, s in self.scenarios.items() if s.in_reference]


# --------------------------------------------------------------------------------------------------
# Locating YAML nodes so errors carry a line number
# --------------------------------------------------------------------------------------------------


def _node_at(root: yaml.Node, loc: Sequence) -> tuple[yaml.Node | None, bool]:
    """The deepest node along ``loc``; second item False when the path stopped early (missing key)."""
    node = root
    for part in loc:
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            for k, v in node.value:
                if k.value == part:
                    node = v
                    break
            else:
                return node, False
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            return node, False
    return node, True


def _key_node(root: yaml.Node, loc: Sequence) -> yaml.Node | None:
    """The key node of the last element of ``loc`` (for unknown-field errors)."""
    parent, complete = _node_at(root, loc[:-1])
    if complete and isinstance(parent, yaml.MappingNode):
        for k, _v in parent.value:
            if k.value == loc[-1]:
                return k
    return None


def _loc_str(loc: Sequence) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _clean_loc(loc: Sequence) -> list:
    # pydantic adds tagged-union / function names to locations; keep only data keys and indices
    return [p for p in loc if isinstance(p, int) or not str(p).startswith(("function-", "union["))]


def _problems_from_validation(path: Path, root: yaml.Node, exc: ValidationError) -> list[Problem]:
    problems = []
    for err in exc.errors():
        loc = _clean_loc(err["loc"])
        node = None
        if err["type"] == "extra_forbidden":
            node = _key_node(root, loc)
        if node is None:
            node, _ = _node_at(root, loc)
        line = node.start_mark.line + 1 if node is not None else None
        col = node.start_mark.column + 1 if node is not None else None
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field (typo?); remove it or use one of the documented fields"
        elif err["type"] == "missing":
            msg = "required field is missing"
        problems.append(Problem(path, msg, line, col, _loc_str(loc) or None))
    return problems


# --------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------


def pack_files(paths: Iterable[Path | str]) -> list[Path]:
    """Every YAML file in the given files/directories (directories: sorted, recursive)."""
    out: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            out.extend(sorted(x for x in p.rglob("*") if x.suffix in (".yaml", ".yml") and x.is_file()))
        elif p.is_file():
            out.append(p)
        else:
            raise UserInputError(f"{p}: no such file or directory")
    return out


_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when available: ~10x faster
_cache: dict[tuple, object] = {}


def parse_file(path: Path) -> tuple[object | None, list[Problem]]:
    """Parse and validate one pack file: (model, problems). Valid files are cached by (path, mtime, size)."""
    try:
        st = path.stat()
        cache_key = (str(path.resolve()), st.st_mtime_ns, st.st_size)
        if cache_key in _cache:
            return _cache[cache_key], []
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return None, [Problem(path, f"cannot read the file: {exc}")]
    try:
        data = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        detail = getattr(exc, "problem", None) or str(exc)
        return None, [
            Problem(
                path,
                f"invalid YAML: {detail}",
                mark.line + 1 if mark else None,
                mark.column + 1 if mark else None,
            )
        ]
    if not isinstance(data, dict):
        return None, [Problem(path, "a pack file must be a YAML mapping with a 'kind' key", 1)]
    kind = data.get("kind", "scenario")
    model = KINDS.get(kind)
    if model is None:
        node = _key_node(yaml.compose(text, Loader=_Loader), ["kind"])
        return None, [
            Problem(
                path,
                f"unknown kind {kind!r}; use one of {', '.join(KINDS)}",
                node.start_mark.line + 1 if node else None,
                None,
                "kind",
            )
        ]
    try:
        obj = model.model_validate(data)
    except ValidationError as exc:
        # only now build the node tree, to point at lines
        return None, _problems_from_validation(path, yaml.compose(text, Loader=_Loader), exc)
    _cache[cache_key] = obj
    return obj, []


def load_files(paths: Iterable[Path | str]) -> Library:
    """Validate exactly the given files/directories into a Library; raise LibraryError listing every problem."""
    lib = Library()
    problems: list[Problem] = []
    for path in pack_files(paths):
        obj, probs = parse_file(path)
        problems.extend(probs)
        if obj is None:
            continue
        lib.files.append(path)
        if isinstance(obj, ScenarioSpec):
            if obj.key in lib.scenarios:
                problems.append(
                    Problem(
                        path,
                        f"scenario {obj.key!r} is already defined in "
                        f"{lib.sources['scenario:' + obj.key]}; rename its key",
                        None,
                        None,
                        "key",
                    )
                )
                continue
            lib.scenarios[obj.key] = obj
            lib.sources["scenario:" + obj.key] = path
        elif isinstance(obj, ProfilePool):
            for prof in obj.profiles:
                if prof.key in lib.profiles:
                    problems.append(
                        Problem(
                            path,
                            f"profile {prof.key!r} is already defined in "
                            f"{lib.sources['profile:' + prof.key]}",
                            None,
                            None,
                            "profiles",
                        )
                    )
                    continue
                lib.profiles[prof.key] = prof
                lib.sources["profile:" + prof.key] = path
        elif isinstance(obj, ProfileFields):
            if lib.profile_fields:
                problems.append(
                    Problem(path, "profile fields are already defined in another file", None, None, "kind")
                )
                continue
            lib.profile_fields = list(obj.fields)
            lib.sources["profile_fields"] = path
    if problems:
        raise LibraryError(problems)
    return lib


def load_library(
    dirs: Iterable[Path | str] | None = None, *, extra_dirs: Iterable[Path | str] = ()
) -> Library:
    """Bundled packs + ``extra_dirs`` (the shells pass ``Settings.scenario_dirs``, from
    ``WORKBENCH_SCENARIO_DIRS``) + ``dirs``, validated."""
    paths = [PACKS_DIR, *(Path(d) for d in extra_dirs)]
    if dirs:
        paths.extend(Path(d) for d in dirs)
    # the same directory named twice must not produce duplicate-key errors
    seen, unique = set(), []
    for p in paths:
        r = p.resolve()
        if r not in seen:
            seen.add(r)
            unique.append(p)
    return load_files(unique)


def profile_fields() -> list[ProfileField]:
    """The reference's profile questionnaire fields (EN/ZH options) from the bundled packs."""
    return load_files([PACKS_DIR / "profile_fields.yaml"]).profile_fields


# --------------------------------------------------------------------------------------------------
# Database sync
# --------------------------------------------------------------------------------------------------


@dataclass
class SyncReport:
    created: dict[str, int] = field(default_factory=lambda: {"scenario": 0, "task_context": 0, "profile": 0})
    updated: dict[str, int] = field(default_factory=lambda: {"scenario": 0, "task_context": 0, "profile": 0})

    def __str__(self) -> str:
        return ", ".join(f"{k}: {self.created[k]} new, {self.updated[k]} updated" for k in self.created)


def _apply(row, values: dict) -> bool:
    changed = False
    for k, v in values.items():
        if getattr(row, k) != v:
            setattr(row, k, v)
            changed = True
    return changed


def sync_library(session, library: Library | None = None) -> SyncReport:
    """Upsert Scenario, TaskContext and Profile rows from the library (idempotent; never deletes).

    Rows are matched by key; changed packs update them in place. The caller commits."""
    from sqlmodel import select

    from db.models import Profile, Scenario, TaskContext

    lib = library if library is not None else load_library()
    report = SyncReport()
    for key, spec in lib.scenarios.items():
        src = lib.sources.get("scenario:" + key)
        values = dict(
            name=spec.names.en,
            names={k: v for k, v in spec.names.model_dump().items() if v},
            description=spec.description.en if spec.description else None,
            aspects=[
                {"key": a.key, **{k: v for k, v in a.names.model_dump().items() if v}} for a in spec.aspects
            ],
            pack=src.name if src else None,
            version=spec.version,
        )
        row = session.exec(select(Scenario).where(Scenario.key == key)).first()
        if row is None:
            row = Scenario(key=key, **values)
            session.add(row)
            session.flush()
            report.created["scenario"] += 1
        elif _apply(row, values):
            report.updated["scenario"] += 1
        existing = {
            tc.key: tc for tc in session.exec(select(TaskContext).where(TaskContext.scenario_id == row.id))
        }
        for tc in spec.task_contexts:
            slots = dict(tc.slots)
            meta = {"set": tc.set}
            if tc.reference_id is not None:
                meta["reference_id"] = tc.reference_id
            tvalues = dict(
                language=tc.language,
                text=tc.text,
                translations=dict(tc.translations),
                slots={**slots, "_meta": meta},
                source="pack",
            )
            trow = existing.get(tc.key)
            if trow is None:
                session.add(TaskContext(scenario_id=row.id, key=tc.key, **tvalues))
                report.created["task_context"] += 1
            elif _apply(trow, tvalues):
                report.updated["task_context"] += 1
    existing_p = (
        {p.key: p for p in session.exec(select(Profile).where(Profile.key.in_(list(lib.profiles))))}
        if lib.profiles
        else {}
    )
    for key, prof in lib.profiles.items():
        fields = dict(prof.fields)
        if prof.mapped:
            fields["mapped"] = {
                f: [o.model_dump(exclude_none=True) for o in opts] for f, opts in prof.mapped.items()
            }
        if prof.reference_id is not None:
            fields["reference_id"] = prof.reference_id
        pvalues = dict(
            language=prof.language,
            fields=fields,
            text=prof.text,
            translations=dict(prof.translations),
            source="pool",
        )
        prow = existing_p.get(key)
        if prow is None:
            session.add(Profile(key=key, **pvalues))
            report.created["profile"] += 1
        elif _apply(prow, pvalues):
            report.updated["profile"] += 1
    session.flush()
    return report
