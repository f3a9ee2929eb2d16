"""Rule-based labeller for the dimensions with surface cues, in English and Chinese.

Cues come from lexicons kept as data files (``annotation/lexicons/<lang>.yaml``), matched on spaCy
blank pipelines (``spacy.blank("en")``; ``spacy.blank("zh")`` with the jieba segmenter) plus
regular expressions for cues that span tokens. Each label's rationale lists the cues it fired on,
so a researcher can see why. Source name ``rule:<version>``.

Example::

    labeller = RuleLabeller.from_lexicons()
    labeller.label(["Hi, please plan my trip.", "Great, I'll book that hotel, thanks!"])
    # {"promise": ("HavePromise", "turn 2: i'll book"), ...}
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from annotation.nlp import clip_texts, detect_language, load_pipeline
from annotation.store import LabelRecord, ensure_source, write_labels
from db.errors import UserInputError, yaml_problem
from db.models import Conversation
from db.models.core import UNFINISHED_STATUSES
from db.repo import get_study, turns_df

LEXICON_DIR = Path(__file__).resolve().parent.parent / "lexicons"
RULES_VERSION = "1"  # the rules below; the lexicon versions are appended in the source name
DIMENSIONS = ("promise", "feedback", "politeness", "formality", "explanation")
CATEGORIES = (
    "promise",
    "feedback_positive",
    "feedback_negative",
    "politeness_polite",
    "politeness_impolite",
    "formality_oral",
    "formality_formal",
    "explanation",
)
NEGATABLE = ("feedback_positive", "politeness_polite", "promise")


def make_pipeline(language: str):
    """The spaCy blank pipeline the rules run on (jieba segmentation for Chinese): blank even when a
    trained pipeline is installed, so rule labels do not depend on the machine."""
    return load_pipeline(language, trained=False)


@dataclass
class Lexicon:
    language: str
    version: str
    phrases: dict[str, list[str]]
    patterns: dict[str, list[re.Pattern]]
    negators: list[str]


def load_lexicon(language: str, directory: Path = LEXICON_DIR) -> Lexicon:
    path = Path(directory) / f"{language}.yaml"
    if not path.exists():
        raise UserInputError(f"no rule lexicon for language {language!r} ({path} is missing)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise UserInputError(yaml_problem(path, exc, " in the rule lexicon")) from None
    phrases, patterns = {}, {}
    for cat in CATEGORIES:
        entry = data.get(cat) or {}
        if not isinstance(entry, dict):
            raise UserInputError(f"{path.name}: {cat}: expected a mapping with phrases and patterns")
        phrases[cat] = [str(p) for p in entry.get("phrases") or []]
        pats = []
        for i, p in enumerate(entry.get("patterns") or []):
            try:
                pats.append(re.compile(str(p)))
            except re.error as exc:
                raise UserInputError(
                    f"{path.name}: {cat}.patterns[{i}]: invalid regular expression: {exc}"
                ) from None
        patterns[cat] = pats
    return Lexicon(
        language=language,
        version=str(data.get("version", "1")),
        phrases=phrases,
        patterns=patterns,
        negators=[str(n).lower() for n in data.get("negators") or []],
    )


class _Matcher:
    """Phrase (token, case-insensitive) and regex cues of one language."""

    def __init__(self, nlp, lexicon: Lexicon):
        from spacy.matcher import PhraseMatcher

        self.nlp, self.lexicon = nlp, lexicon
        self.matcher = PhraseMatcher(nlp.vocab, attr="LOWER")
        for cat, items in lexicon.phrases.items():
            if items:
                self.matcher.add(cat, [nlp.make_doc(p) for p in items])

    def cues(self, text: str) -> dict[str, list[str]]:
        doc = self.nlp.make_doc(text)
        found: dict[str, list[str]] = {}
        negators = set(self.lexicon.negators)
        for match_id, start, end in self.matcher(doc):
            cat = self.nlp.vocab.strings[match_id]
            # "not helpful", "不满意": a negated positive cue is not a positive cue.
            if cat in NEGATABLE and any(t.lower_ in negators for t in doc[max(0, start - 2) : start]):
                continue
            found.setdefault(cat, []).append(doc[start:end].text.lower())
        low = text.lower()
        for cat, pats in self.lexicon.patterns.items():
            for p in pats:
                hits = [m.group(0) for m in p.finditer(low)]
                if hits:
                    found.setdefault(cat, []).extend(hits)
        return {k: v for k, v in found.items() if v}


class RuleLabeller:
    """Labels a conversation from its user turns (list of str, in order)."""

    def __init__(self, matchers: dict[str, _Matcher]):
        self.matchers = matchers

    @classmethod
    def from_lexicons(
        cls,
        languages: Sequence[str] = ("en", "zh"),
        directory: Path = LEXICON_DIR,
        pipeline: Callable[[str], object] = make_pipeline,
    ) -> RuleLabeller:
        return cls({lang: _Matcher(pipeline(lang), load_lexicon(lang, directory)) for lang in languages})

    @property
    def version(self) -> str:
        lex = ".".join(f"{lang}{m.lexicon.version}" for lang, m in sorted(self.matchers.items()))
        return f"v{RULES_VERSION}-{lex}"

    def _turn_cues(self, text: str) -> dict[str, list[str]]:
        lang = detect_language(text)
        matcher = self.matchers.get(lang) or next(iter(self.matchers.values()))
        return matcher.cues(text)

    def label(
        self, user_turns: Sequence[str], dimensions: Iterable[str] = DIMENSIONS
    ) -> dict[str, tuple[str, str]]:
        """``{dimension: (value, rationale)}`` for the conversation's user turns (each read up to
        ``annotation.nlp.MAX_TEXT_CHARS`` characters: spaCy refuses longer texts)."""
        cues = [self._turn_cues(t) for t in clip_texts(user_turns)[0]]

        def where(cat: str, start: int = 0) -> list[str]:
            return [
                f"turn {i + 1}: {', '.join(sorted(set(c[cat])))}"
                for i, c in enumerate(cues)
                if i >= start and cat in c
            ]

        out = {}
        dims = set(dimensions)
        if "promise" in dims:
            # A promise answers a suggestion, so the opening request cannot hold one.
            hits = where("promise", 1)
            out["promise"] = ("HavePromise" if hits else "NoPromise", "; ".join(hits) or "no commitment cue")
        if "feedback" in dims:
            pos, neg = where("feedback_positive", 1), where("feedback_negative", 1)
            value = {(True, True): "Both", (True, False): "Positive", (False, True): "Negative"}.get(
                (bool(pos), bool(neg)), "NoFeedback"
            )
            out["feedback"] = (
                value,
                "; ".join([f"+ {h}" for h in pos] + [f"- {h}" for h in neg]) or "no feedback cue",
            )
        if "politeness" in dims:
            rude, polite = where("politeness_impolite"), where("politeness_polite")
            value = "Impolite" if rude else "Polite" if polite else "Neutral"
            out["politeness"] = (value, "; ".join(rude or polite) or "no politeness cue")
        if "formality" in dims:
            oral = [
                i
                for i, c in enumerate(cues)
                if len(c.get("formality_oral", [])) > len(c.get("formality_formal", []))
            ]
            formal = [i for i, c in enumerate(cues) if i not in oral]
            share = len(oral) / len(cues) if cues else 0.0
            value = "Oral" if share >= 0.6 else "Formal" if share <= 0.25 else "Mixed"
            out["formality"] = (
                value,
                f"{len(oral)} of {len(cues)} turns with more oral than formal cues; "
                + "; ".join(where("formality_oral")[:3]),
            )
            del formal
        if "explanation" in dims:
            hits = where("explanation")
            value = "Frequent" if len(hits) >= 2 else "Rare" if hits else "NoExplanation"
            out["explanation"] = (value, "; ".join(hits) or "no reason cue")
        return out


def label_study(
    engine: Engine,
    study: str,
    dimensions: Iterable[str] | None = None,
    labeller: RuleLabeller | None = None,
    codebook_version: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[str, int, int]:
    """Label every finished conversation of the study; returns (source name, conversations, labels written)."""
    dims = list(dimensions) if dimensions else list(DIMENSIONS)
    if bad := [d for d in dims if d not in DIMENSIONS]:
        raise UserInputError(f"the rule labeller has no rules for {bad} (it labels: {', '.join(DIMENSIONS)})")
    labeller = labeller or RuleLabeller.from_lexicons()
    with Session(engine, expire_on_commit=False) as session:
        st = get_study(session, study)
        turns = turns_df(session, st.id)
        finished = session.exec(
            select(Conversation.id).where(
                Conversation.study_id == st.id, Conversation.status.not_in(UNFINISHED_STATUSES)
            )
        ).all()
        turns = turns[turns["conversation_id"].isin(set(finished))]
        users = turns[turns["role"] == "user"].groupby("conversation_id")["content"].apply(list)
        name = f"rule:{labeller.version}"
        src = ensure_source(
            session,
            name,
            "rule",
            model="rules",
            prompt_version=labeller.version,
            codebook_version=codebook_version,
            params={"lexicons": {k: m.lexicon.version for k, m in labeller.matchers.items()}},
        )
        records = []
        cut = 0
        for i, (conv_id, texts) in enumerate(users.items()):
            cut += clip_texts(texts)[1]
            for dim, (value, why) in labeller.label(texts, dims).items():
                records.append(
                    LabelRecord(conversation_id=int(conv_id), dimension=dim, value=value, rationale=why)
                )
            if progress:
                progress(i + 1, len(users))
        n = write_labels(session, src, records)
        # how many user turns were read only up to the pipeline limit, for the record
        src.params = {**(src.params or {}), "texts_cut": cut}
        session.add(src)
        session.commit()
    return name, len(users), n
