"""Versioned prompt templates for the simulated user (YAML files, one version per file)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from db.errors import UserInputError, yaml_problem

BUNDLED_DIR = Path(__file__).with_name("prompts")
PARTS = ("system", "opening", "too_early", "goal_reminder", "no_profile")
_PLACEHOLDER = re.compile(r"\{(profile|task|min_turns|max_turns|n)\}")


@dataclass(frozen=True)
class TemplateKind:
    """One family of versioned YAML prompts: what the messages call it, where the bundled files lie,
    the parts every language section must have, the placeholders filled, the default name."""

    what: str
    directory: Path
    parts: tuple[str, ...]
    placeholder: re.Pattern
    default: str


USER = TemplateKind("prompt template", BUNDLED_DIR, PARTS, _PLACEHOLDER, "user")


@dataclass(frozen=True)
class PromptTemplate:
    name: str
    version: str
    texts: dict  # language -> {part: text}
    path: Path
    kind: TemplateKind = field(default=USER, compare=False, repr=False)

    @property
    def label(self) -> str:
        """What the calls and conversations store as ``prompt_version``: ``name@version``."""
        return f"{self.name}@{self.version}"

    def part(self, language: str, part: str, **values) -> str:
        texts = self.texts.get(language) or self.texts.get("en") or next(iter(self.texts.values()))
        # Only known placeholders are filled, so JSON braces in the text stay as they are.
        return self.kind.placeholder.sub(lambda m: str(values.get(m.group(1), m.group(0))), texts[part])


def read_template(kind: TemplateKind, path: Path) -> PromptTemplate:
    """One YAML file of ``kind``, checked: a clear error for every way it can be wrong."""
    what = kind.what
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise UserInputError(yaml_problem(path, exc, f" in the {what}")) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserInputError(f"cannot read the {what} {path}: {exc}") from None
    if not isinstance(doc, dict) or not doc.get("name") or not doc.get("version"):
        raise UserInputError(f"{path}: a {what} needs 'name', 'version' and per-language texts")
    texts = {k: v for k, v in doc.items() if k not in ("name", "version") and isinstance(v, dict)}
    if not texts:
        raise UserInputError(f"{path}: no language sections (e.g. 'en:') with {', '.join(kind.parts)}")
    for lang, parts in texts.items():
        missing = [p for p in kind.parts if not isinstance(parts.get(p), str)]
        if missing:
            raise UserInputError(f"{path}: language {lang!r} lacks {', '.join(missing)}")
    return PromptTemplate(str(doc["name"]), str(doc["version"]), texts, path, kind)


def find_template(kind: TemplateKind, spec: str | None = None) -> PromptTemplate:
    """``spec``: a YAML path, ``name`` (newest version) or ``name@version``; default ``kind.default``."""
    spec = spec or kind.default
    if spec.endswith((".yaml", ".yml")) or "/" in spec:
        path = Path(spec)
        if not path.is_file():
            raise UserInputError(f"{kind.what} file {spec} does not exist")
        return read_template(kind, path)
    name, _, version = spec.partition("@")
    bundled = [read_template(kind, p) for p in sorted(kind.directory.glob("*.yaml"))]
    found = [t for t in bundled if t.name == name and (not version or t.version == version)]
    if not found:
        known = ", ".join(t.label for t in bundled)
        raise UserInputError(f"no {kind.what} {spec!r} (bundled: {known}; or give a .yaml path)")
    return max(found, key=lambda t: (len(t.version), t.version))


def available_templates() -> list[PromptTemplate]:
    return [read_template(USER, p) for p in sorted(BUNDLED_DIR.glob("*.yaml"))]


def load_template(spec: str | None = None) -> PromptTemplate:
    """``spec``: a YAML path, ``name`` (newest version) or ``name@version``; default ``user``."""
    return find_template(USER, spec)
