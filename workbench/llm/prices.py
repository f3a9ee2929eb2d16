"""Per-model prices (USD per million tokens) from ``prices.yaml``, updated by a price file.

The price file is an argument (``prices_file=``; the shells pass ``Settings.prices_file``, read
from WORKBENCH_PRICES); without one the bundled table alone is used.
"""

from __future__ import annotations

import fnmatch
from functools import lru_cache
from pathlib import Path

import yaml

from db.errors import UserInputError, yaml_problem
from db.settings import ENV_PRICES

BUNDLED = Path(__file__).with_name("prices.yaml")


def _read(path: Path) -> dict[str, dict]:
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise UserInputError(yaml_problem(path, exc, f" in the price table (check {ENV_PRICES})")) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserInputError(f"cannot read the price table {path}: {exc}") from None
    models = doc.get("models", doc) if isinstance(doc, dict) else None
    if not isinstance(models, dict):
        raise UserInputError(f"{path}: expected 'models: {{provider/model: {{input: X, output: Y}}}}'")
    out = {}
    for name, p in models.items():
        if name == "version":
            continue
        if not isinstance(p, dict) or not {"input", "output"} <= set(p):
            raise UserInputError(f"{path}: price of {name!r} needs 'input' and 'output' (USD per 1M tokens)")
        out[str(name)] = {"input": float(p["input"]), "output": float(p["output"])}
    return out


@lru_cache(maxsize=8)
def _table(override: str | None) -> dict[str, dict]:
    table = _read(BUNDLED)
    if override:
        table.update(_read(Path(override)))
    return table


def _key(prices_file: str | Path | None) -> str | None:
    # The caches are keyed on the file's name as a string, so "" and None both mean "bundled only".
    return str(prices_file) if prices_file else None


def price_table(prices_file: str | Path | None = None) -> dict[str, dict]:
    """The effective table: bundled prices updated with ``prices_file`` when given."""
    return dict(_table(_key(prices_file)))


def price_of(model: str, prices_file: str | Path | None = None) -> dict | None:
    """``{"input": X, "output": Y}`` (USD per 1M tokens) for ``model``, or None when it has no price.

    An exact entry wins; otherwise the longest matching pattern (``openai/gpt-4o-mini*``)."""
    return _price_of(model, _key(prices_file))


@lru_cache(maxsize=256)
def _price_of(model: str, override: str | None) -> dict | None:
    # Cached: it runs on every call, and matching patterns over the whole table is not free.
    table = _table(override)
    if model in table:
        return table[model]
    matches = [k for k in table if any(c in k for c in "*?[") and fnmatch.fnmatchcase(model, k)]
    return table[max(matches, key=len)] if matches else None


def cost_of(
    model: str, prompt_tokens: int, completion_tokens: int, prices_file: str | Path | None = None
) -> float | None:
    """USD for one call, or None when the model has no price (unknown cost, not zero)."""
    p = price_of(model, prices_file)
    if p is None:
        return None
    return (prompt_tokens * p["input"] + completion_tokens * p["output"]) / 1_000_000
