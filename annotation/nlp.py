"""spaCy pipelines for English and Chinese, shared by the features and the rule-based labeller.

spaCy's trained pipelines are not on the package registry, so the workbench runs on blank pipelines
(``spacy.blank("en")``; ``spacy.blank("zh")`` with jieba segmentation) and uses a trained pipeline
only when one is installed.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

TRAINED = {"en": "en_core_web_sm", "zh": "zh_core_web_sm"}
# Longest text given to a pipeline: spaCy refuses texts over nlp.max_length (1,000,000 characters)
# with a traceback, and no user turn of a real conversation comes near 100,000 characters (the
# reference data's longest is under 3,000). Longer texts are cut here and the cut is counted.
MAX_TEXT_CHARS = 100_000
_CJK = re.compile(r"[\u4e00-\u9fff]")


def lang_key(language: str | None) -> str:
    """ "zh" for any Chinese language tag, else "en"."""
    return "zh" if (language or "").lower().startswith("zh") else "en"


def detect_language(text: str) -> str:
    """ "zh" when a fifth or more of the letters are CJK ideographs, else "en"."""
    letters = sum(ch.isalpha() for ch in text)
    return "zh" if letters and len(_CJK.findall(text)) / letters >= 0.2 else "en"


class _JiebaNoHMM:
    """jieba's accurate mode without HMM new-word discovery: about twice as fast (10 s instead of
    18 s for the reference's 1.4 M characters); unknown words split into known pieces."""

    def __init__(self, jieba_module):
        self._jieba = jieba_module

    def cut(self, text, cut_all=False):
        return self._jieba.cut(text, cut_all=cut_all, HMM=False)


def clip_text(text: str, limit: int = MAX_TEXT_CHARS) -> tuple[str, bool]:
    """``text`` cut to ``limit`` characters for a pipeline, and whether it was cut."""
    text = text or ""
    return (text, False) if len(text) <= limit else (text[:limit], True)


def clip_texts(texts: Iterable[str], limit: int = MAX_TEXT_CHARS) -> tuple[list[str], int]:
    """Every text cut to ``limit`` characters, and how many were cut."""
    out, cut = [], 0
    for text in texts:
        clipped, was_cut = clip_text(text, limit)
        out.append(clipped)
        cut += was_cut
    return out, cut


def load_pipeline(language: str, trained: bool = True):
    """The spaCy pipeline for a language: the trained one when installed (and ``trained``), else a
    blank one (jieba segmentation for Chinese). Only tokenisation is needed, so heavy components are
    excluded."""
    import spacy

    lang = lang_key(language)
    if trained and spacy.util.is_package(TRAINED[lang]):
        return spacy.load(TRAINED[lang], exclude=["parser", "ner", "lemmatizer", "textcat", "senter"])
    if lang == "zh":
        import jieba

        jieba.setLogLevel(logging.WARNING)  # no "Building prefix dict..." chatter on every run
        nlp = spacy.blank("zh", config={"nlp": {"tokenizer": {"segmenter": "jieba"}}})
        nlp.tokenizer.jieba_seg = _JiebaNoHMM(nlp.tokenizer.jieba_seg)
        nlp.meta["name"] = "blank_jieba_nohmm"
        return nlp
    return spacy.blank("en")


def load_pipelines(languages: Iterable[str] = ("en", "zh"), trained: bool = True) -> dict:
    return {lang_key(lang): load_pipeline(lang, trained) for lang in languages}
