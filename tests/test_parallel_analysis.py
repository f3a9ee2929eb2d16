"""Chunked analysis in worker processes gives the same numbers as the single-process path.

The thresholds are lowered so a small study takes the large-study path (two spawned workers on a
real SQLite file)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import analysis.fidelity as F
import analysis.parallel as par
from analysis.dataset import load_study
from analysis.synthetic import make_study
from db.engine import make_engine
from db.migrate import upgrade


def _engine(path):
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    make_study(engine, "par", n_human=150, n_agent=150, simulators=2, n_participants=12, seed=3)
    return engine


def test_features_in_workers_equal_single_process(tmp_path, monkeypatch):
    monkeypatch.setenv(par.ENV_WORKERS, "2")
    serial = load_study(_engine(tmp_path / "a.db"), "par").features
    monkeypatch.setattr(par, "PARALLEL_MIN_CONVERSATIONS", 10)
    engine = _engine(tmp_path / "b.db")
    assert par.use_workers(engine, 300) == 2
    parallel = load_study(engine, "par").features
    pd.testing.assert_frame_equal(serial, parallel)
    # stored chunk by chunk: a second load reads them back unchanged
    pd.testing.assert_frame_equal(parallel, load_study(engine, "par").features)


def test_prepare_study_in_chunks(tmp_path, monkeypatch):
    engine = _engine(tmp_path / "c.db")
    data = load_study(engine, "par")
    whole = F.prepare_study(engine, data, embedder=F.EMBEDDERS["tfidf_svd"])
    monkeypatch.setenv(par.ENV_WORKERS, "2")
    monkeypatch.setattr(par, "PARALLEL_MIN_CONVERSATIONS", 10)
    monkeypatch.setattr(F, "EMBED_FIT_SAMPLE", 100)
    chunked = F.prepare_study(engine, data, embedder=F.EMBEDDERS["tfidf_svd"], chunk=70)
    pd.testing.assert_frame_equal(whole.conversations, chunked.conversations)
    # per-conversation scores do not depend on the chunking
    np.testing.assert_array_equal(whole.fingerprint, chunked.fingerprint)
    np.testing.assert_array_equal(whole.lexical, chunked.lexical)
    assert chunked.embedding.shape[0] == len(data.conversations)
    assert np.allclose(np.linalg.norm(chunked.embedding, axis=1), 1.0)
    assert "100 conversations of this study drawn at random" in chunked.embedding_name
    records, _ = F.fidelity_tables(chunked, splits=2, n_boot=0)
    assert records["value"].notna().any()


def test_workers_setting(monkeypatch):
    from db.errors import UserInputError

    monkeypatch.setenv(par.ENV_WORKERS, "1")
    assert par.analysis_workers() == 1
    monkeypatch.setenv(par.ENV_WORKERS, "two")
    with pytest.raises(UserInputError):
        par.analysis_workers()
    assert par.engine_url(make_engine("sqlite://")) is None


def test_workers_start_while_a_page_script_is_main(tmp_path, monkeypatch):
    """Inside Streamlit ``__main__`` is the page script; spawned workers must not run it (they died
    with BrokenProcessPool once an in-process page test had left its script there)."""
    import sys
    import types

    script = tmp_path / "page.py"
    script.write_text("import os\nos._exit(3)\n")
    page = types.ModuleType("__main__")
    page.__file__ = str(script)
    page.__spec__ = None
    monkeypatch.setitem(sys.modules, "__main__", page)
    out = sorted(par.map_chunks(abs, [(-1,), (-2,), (-3,)], workers=2))
    assert out == [1, 2, 3]
    assert sys.modules["__main__"] is page
