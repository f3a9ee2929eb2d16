"""Adjudication in the real browser: after a decision the item box names the item now shown (the
options used to be positions, so the box kept the settled item's name over the next item); items
are named by an opaque number, not by their conversation id."""

from __future__ import annotations

import pytest
from sqlmodel import Session, select

from annotation.codebook import load_codebook
from annotation.labelling import save_labels
from annotation.queue import assign_items
from db.engine import make_engine
from db.migrate import upgrade
from db.models import Annotator
from db.models.annotation import AnnotationAssignment
from tests.annotation_data import full_labels, make_study
from tests.e2e.helpers import served_page
from workbench import accounts as A

pytestmark = pytest.mark.e2e


def _item_shown(page) -> str:
    box = page.locator('[data-testid="stSelectbox"]').filter(has_text="Item")
    return box.locator("input").first.input_value()


def test_item_box_follows_the_decision(tmp_path, chromium_path):
    from playwright.sync_api import expect

    db_url = f"sqlite:///{tmp_path / 'adj.db'}"
    eng = make_engine(db_url)
    upgrade(eng)
    cb = load_codebook()
    with Session(eng, expire_on_commit=False) as s:
        make_study(s, n_per_cell=1, language="en", annotators=("ann", "bob"))
        assign_items(s, "pilot", ["ann", "bob"], overlap=2, seed=3)
        A.add_user(s, "rita", "researcher", "rita-password-1")
        conv = s.exec(select(AnnotationAssignment.conversation_id).order_by(AnnotationAssignment.id)).first()
        for name, pol, form in (("ann", "Polite", "Oral"), ("bob", "Impolite", "Formal")):
            a = s.exec(select(Annotator).where(Annotator.name == name)).one()
            save_labels(s, 1, a, conv, cb, full_labels(cb) | {"politeness": pol, "formality": form})
        s.commit()
    eng.dispose()
    with served_page(db_url, tmp_path, viewport={"width": 1400, "height": 1000}) as (server, page):
        page.goto(server.base)
        page.get_by_role("textbox", name="User name").fill("rita")
        page.get_by_role("textbox", name="Password").fill("rita-password-1")
        page.get_by_role("button", name="Log in").click()
        expect(page.get_by_text("Log out (rita)")).to_be_visible()
        page.goto(f"{server.base}/adjudicate")
        expect(page.get_by_text("0 of 2 disagreements settled")).to_be_visible()
        first = _item_shown(page)
        dim_first, dim_next = (
            ("formality", "politeness") if "Formality" in first else ("politeness", "formality")
        )
        # named by an opaque number (one conversation here: item 1), never by its database id
        assert first == f"item 1: {dim_first.capitalize()}"
        expect(page.locator("h2").first).to_have_text(dim_first.capitalize())
        form = page.locator('[data-testid="stForm"]')
        form.get_by_text("Oral" if dim_first == "formality" else "Polite", exact=True).click()
        form.get_by_role("button", name="Save decision").click()
        expect(page.get_by_text("1 of 2 disagreements settled")).to_be_visible()
        expect(page.locator("h2").first).to_have_text(dim_next.capitalize())
        expect(
            page.locator('[data-testid="stSelectbox"]').filter(has_text="Item").locator("input").first
        ).to_have_value(f"item 1: {dim_next.capitalize()}")
