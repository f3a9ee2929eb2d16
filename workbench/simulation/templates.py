"""Versioned prompt templates for the simulated user (YAML files, one version per file)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from db.errors import UserInputError, yaml_problem

BUNDLED_DIR = Path(__file__).with_name("prompts")
PARTS = ("system", "opening", "too_early", "goal_reminder", "no_profile")
_PLACEHOLDER = re.compile(r"\{(profile|task|min_turns|max_turns|n)\}")


@dataclass(frozen=True)
class PromptTemplate:
    name: str
    version: str
    texts: dict  # language -> {part: text}
    path: Path

    @property
    def label(self) -> str:
        """What conversations store as ``prompt_version``: ``name@version``."""
        return f"{self.name}@{self.version}"

    def part(self, language: str, part: str, **values) -> str:
        texts = self.texts.get(language) or self.texts.get("en") or next(iter(self.texts.values()))
        # Only known placeholders are filled, so JSON braces in the text stay as they are.
        return _PLACEHOLDER.sub(lambda m: str(values.get(m.group(1), m.group(0))), texts[part])


def _load(path: Path) -> PromptTemplate:
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise UserInputError(yaml_problem(path, exc, " in the prompt template")) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserInputError(f"cannot read the prompt template {path}: {exc}") from None
    if not isinstance(doc, dict) or not doc.get("name") or not doc.get("version"):
        raise UserInputError(f"{path}: a prompt template needs 'name', 'version' and per-language texts")
    texts = {k: v for k, v in doc.items() if k not in ("name", "version") and isinstance(v, dict)}
    if not texts:
        raise UserInputError(f"{path}: no language sections (e.g. 'en:') with {', '.join(PARTS)}")
    for lang, parts in texts.items():
        missing = [p for p in PARTS if not isinstance(parts.get(p), str)]
        if missing:
            raise UserInputError(f"{path}: language {lang!r} lacks {', '.join(missing)}")
    return PromptTemplate(str(doc["name"]), str(doc["version"]), texts, path)


def available_templates() -> list[PromptTemplate]:
    return [_load(p) for p in sorted(BUNDLED_DIR.glob("*.yaml"))]


def load_template(spec: str | None = None) -> PromptTemplate:
    """``spec``: a YAML path, ``name`` (newest version) or ``name@version``; default ``user``."""
    spec = spec or "user"
    if spec.endswith((".yaml", ".yml")) or "/" in spec:
        path = Path(spec)
        if not path.is_file():
            raise UserInputError(f"prompt template file {spec} does not exist")
        return _load(path)
    name, _, version = spec.partition("@")
    found = [t for t in available_templates() if t.name == name and (not version or t.version == version)]
    if not found:
        known = ", ".join(t.label for t in available_templates())
        raise UserInputError(f"no prompt template {spec!r} (bundled: {known}; or give a .yaml path)")
    return max(found, key=lambda t: (len(t.version), t.version))
