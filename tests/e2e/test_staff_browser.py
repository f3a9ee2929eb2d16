"""The staff side in a real browser: an annotator labels blind, a researcher reads the results.

Twenty released RecLLMSim files (agent users and both human waves, two scenarios) are imported with
the CLI into a fresh SQLite database; accounts and the labelling queue are made with the CLI too.
Debian's chromium is driven by Playwright; screenshots go to test-output/e2e/staff-*.png.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from sqlmodel import Session, select

from analysis.findings import Names
from annotation.codebook import load_codebook
from annotation.labelling import blind_view
from db.engine import make_engine
from db.models import Annotator, Condition, Conversation, Label, LabelSource, Scenario
from db.models.annotation import AnnotationAssignment, HumanityGuess
from tests.conftest import dataset_path
from tests.e2e.helpers import (
    ARGS,
    CHROMIUM,
    REPO,
    SHOTS,
    AppServer,
    click_inside,
    click_until,
    page_text,
    settle,
    shot,
    view_shot,
)

pytestmark = pytest.mark.e2e

PASSWORDS = {"ann": "ann-e2e-pass-1", "rita": "rita-e2e-pass-1"}
# Words that would tell an annotator who the user was: user kinds, the dataset's folder and file
# names (LLM_agent_user/, real_human_user/User_7/3.json), model and simulator names, the waves.
LEAKS = [
    "agent",
    "human",
    "llm",
    "gpt",
    "claude",
    "gemini",
    "deepseek",
    "user_",
    ".json",
    "simulat",
    "wave",
    "imported",
    "recllmsim",
    "translat",
    "user kind",
]


def _copy_sample(dst: Path) -> int:
    """Four agent files and three files of each human wave per scenario (travel, recipe): 20 files."""
    src = dataset_path()
    picks = []
    for scen in ("travel planning", "recipe planning"):
        picks += sorted((src / "LLM_agent_user" / scen).glob("*.json"), key=lambda p: int(p.stem))[:4]
    for wave in ("real_human_user", "human_exp_V2"):
        for scen in ("旅行规划", "菜谱规划"):
            files = sorted(
                (src / wave).glob(f"User_*/{scen}/*.json"),
                key=lambda p: (int(p.parts[-3].split("_")[1]), int(p.stem)),
            )
            picks += files[:3]
    for p in picks:
        target = dst / p.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(p, target)
    return len(picks)


def _cli(env: dict, *args: str, stdin: str | None = None) -> str:
    out = subprocess.run(
        [sys.executable, "-c", "from workbench.cli import main; main()", *args],
        cwd=REPO,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


@pytest.fixture
def staff_app(tmp_path, chromium_path):
    data = tmp_path / "recllmsim"
    assert _copy_sample(data) == 20
    db_url = f"sqlite:///{tmp_path / 'staff.db'}"
    env = {**os.environ, "WORKBENCH_DB_URL": db_url, "WORKBENCH_DATA_DIR": str(tmp_path / "data")}
    assert "20 conversations imported" in _cli(env, "import", "recllmsim", str(data), "--study", "staff")
    for name, role in (("ann", "annotator"), ("rita", "researcher")):
        _cli(env, "users", "add", name, "--role", role, "--password-stdin", stdin=PASSWORDS[name] + "\n")
    _cli(
        env,
        "annotate",
        "assign",
        "--study",
        "staff",
        "--annotators",
        "ann",
        "--overlap",
        "1",
        "--per-annotator",
        "4",
        "--seed",
        "1",
    )
    eng = make_engine(db_url)
    server = AppServer(env, tmp_path / "serve.log")
    try:
        server.start()
        yield server.base, eng
    finally:
        server.close()
        eng.dispose()


def _login(page, base: str, name: str) -> None:
    from playwright.sync_api import expect

    page.goto(base)
    page.get_by_role("textbox", name="User name").fill(name)
    page.get_by_role("textbox", name="Password").fill(PASSWORDS[name])
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_text(f"Log out ({name})")).to_be_visible()


def _radio(form, title: str):
    """The radio group whose label is exactly ``title``."""
    return form.locator('[data-testid="stRadio"]').filter(
        has=form.page.locator('[data-testid="stWidgetLabel"]').get_by_text(title, exact=True)
    )


def _assert_blind(text: str, where: str) -> None:
    low = text.lower()
    leaked = [w for w in LEAKS if w in low]
    assert not leaked, f"{leaked} on the annotator's {where}: " + "; ".join(
        low[max(0, low.find(w) - 60) : low.find(w) + 60] for w in leaked
    )


def test_annotator_labels_and_researcher_reads(staff_app):
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=30_000)
    SHOTS.mkdir(parents=True, exist_ok=True)
    base, eng = staff_app
    codebook = load_codebook()
    conv_dims = codebook.conversation_dimensions()
    with Session(eng) as s:
        ann = s.exec(select(Annotator).where(Annotator.name == "ann")).one()
        queue = s.exec(
            select(AnnotationAssignment)
            .where(AnnotationAssignment.annotator_id == ann.id)
            .order_by(AnnotationAssignment.position)
        ).all()
        assert len(queue) == 4
        first = queue[0].conversation_id
        view = blind_view(s, first, "zh")  # the study's human users wrote Chinese: the queue is shown in zh
    replies = [t for t in view.turns if t.role == "assistant"]
    assert len(replies) >= 2

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(30_000)
        browser_pages = [page]
        try:
            _staff_session(browser, browser_pages, base, eng, ann, queue, first, view, replies, conv_dims)
        except Exception:
            browser_pages[-1].screenshot(path=str(SHOTS / "staff-failure.png"))  # what the browser showed
            raise
        browser.close()


def _staff_session(browser, browser_pages, base, eng, ann, queue, first, view, replies, conv_dims):
    """The browser part: the annotator, then the researcher (the database is checked on the way)."""
    from playwright.sync_api import expect

    page = browser_pages[0]
    # --- the annotator: home, then the labelling page -----------------------------------------
    _login(page, base, "ann")
    expect(page.get_by_text("Your labelling queues.")).to_be_visible()
    expect(page.get_by_role("link", name="Go to labelling")).to_be_visible()
    shot(page, SHOTS / "staff-01-annotator-home.png")
    home_text = page_text(page)
    assert "Labelled" in home_text and "staff" in home_text  # the scan reads the table's cells too
    _assert_blind(home_text, "home page")
    sidebar = page.locator('[data-testid="stSidebarNav"]')
    for research_page in (
        "Dashboard",
        "Transcripts",
        "Export",
        "Studies",
        "Progress",
        "Simulation",
        "Adjudicate",
    ):
        expect(sidebar.get_by_text(research_page, exact=True)).to_have_count(0)
    page.get_by_role("link", name="Go to labelling").click()
    expect(page.get_by_text("已标注 0，已跳过 0，剩余 4（共 4）")).to_be_visible()
    expect(page.get_by_text("第 1 条，共 4 条")).to_be_visible()
    expect(page.get_by_role("button", name="保存并继续")).to_be_visible()  # the form's end: all drawn
    text = page_text(page)
    # The scan sees the conversation, the codebook's dimensions, the guess and the buttons...
    for seen in (
        view.turns[0].text[:30],
        replies[0].text[:30],
        conv_dims[0].display_title("zh"),
        "幻觉，第 1 条回复",
        "这位用户是真人还是 AI？（可选）",
        "保存并继续",
        view.scenario_name,
    ):
        assert seen in text, seen
    # ... and nothing that tells who the user was.
    _assert_blind(text, "labelling page")
    shot(page, SHOTS / "staff-02-annotate.png")
    view_shot(page, page.get_by_role("heading", name="标注对话"), SHOTS / "staff-02a-annotate-top.png")

    # Label the first item through the form: every dimension, two turn flags, the guess.
    form = page.locator('[data-testid="stForm"]')
    chosen = {d.name: d.labels[i % len(d.labels)] for i, d in enumerate(conv_dims)}
    for d in conv_dims:
        _radio(form, d.display_title("zh")).get_by_text(
            d.label_title(chosen[d.name], "zh"), exact=True
        ).click()
    # hallucination values are shown by their codebook display names in the page language (否 = no)
    _radio(form, "幻觉，第 1 条回复").get_by_text("否", exact=True).click()
    _radio(form, "幻觉，第 2 条回复").get_by_text("无法判断", exact=True).click()
    _radio(form, "这位用户是真人还是 AI？（可选）").get_by_text("AI", exact=True).click()
    _radio(form, "你有多确定？").get_by_text("4", exact=True).click()
    form.get_by_label("理由（可选）").fill("checked in a real browser")
    # Streamlit's English-only "Press Enter to ..." hint is drawn but not shown on a Chinese page.
    hint = form.get_by_test_id("InputInstructions")
    expect(hint.first).to_be_attached()
    expect(hint.first).to_be_hidden()
    shot(page, SHOTS / "staff-03-annotate-filled.png")
    view_shot(page, page.get_by_text("整段对话", exact=True), SHOTS / "staff-03b-annotate-form.png")
    form.get_by_role("button", name="保存并继续").click()
    expect(page.get_by_text("已标注 1，已跳过 0，剩余 3（共 4）")).to_be_visible()
    expect(page.get_by_text("第 2 条，共 4 条")).to_be_visible()
    expect(page.get_by_role("button", name="保存并继续")).to_be_visible()
    _assert_blind(page_text(page), "labelling page (item 2)")
    shot(page, SHOTS / "staff-04-annotate-next.png")

    with Session(eng) as s:
        src = s.exec(select(LabelSource).where(LabelSource.name == "human:ann")).one()
        assert src.kind == "human"
        labels = s.exec(select(Label).where(Label.source_id == src.id)).all()
        assert {lab.conversation_id for lab in labels} == {first}
        assert {lab.dimension: lab.value for lab in labels if lab.turn_index == -1} == chosen
        assert all(lab.rationale == "checked in a real browser" for lab in labels if lab.turn_index == -1)
        turn_labels = {lab.turn_index: lab.value for lab in labels if lab.turn_index >= 0}
        assert turn_labels == {replies[0].index: "no", replies[1].index: "cant_tell"}
        guess = s.exec(select(HumanityGuess)).one()
        assert (guess.conversation_id, guess.annotator_id, guess.guess, guess.confidence) == (
            first,
            ann.id,
            "ai",
            4,
        )
        statuses = [s.get(AnnotationAssignment, a.id).status for a in queue]
        assert statuses == ["done", "pending", "pending", "pending"]

    # A reload starts a new Streamlit session; the login's token in a cookie (never in the address)
    # brings the annotator back without the login form, on every page of the sidebar; the label stays.
    port = base.rsplit(":", 1)[1].split("/")[0]
    cookies = {c["name"]: c for c in page.context.cookies()}
    assert f"wb_staff_{port}" in cookies, cookies
    jar = cookies[f"wb_staff_{port}"]
    assert jar["sameSite"] == "Strict" and jar["expires"] > 0 and len(jar["value"]) >= 40
    assert jar["value"] not in page.url and "session=" not in page.url
    page.reload()
    expect(page.get_by_text("Log out (ann)")).to_be_visible()
    expect(page.get_by_role("button", name="Log in")).to_have_count(0)
    page.get_by_role("link", name="Annotate").click()
    expect(page.get_by_text("已标注 1，已跳过 0，剩余 3（共 4）")).to_be_visible()
    assert "session=" not in page.url
    settle(page)
    # The expander opens in the browser alone; a click racing the page's last drawing can be lost,
    # and a late rerun can close it again before "打开" is clicked.
    click_inside(
        page,
        page.locator('[data-testid="stSidebar"]').get_by_text("查看之前的条目"),
        page.get_by_role("button", name="打开"),
        page.get_by_text("你正在修改已标注过的条目。"),
    )
    form = page.locator('[data-testid="stForm"]')
    for d in conv_dims:
        expect(
            _radio(form, d.display_title("zh")).get_by_role(
                "radio", name=d.label_title(chosen[d.name], "zh"), exact=True
            )
        ).to_be_checked()
    expect(_radio(form, "幻觉，第 1 条回复").get_by_role("radio", name="否", exact=True)).to_be_checked()
    expect(
        _radio(form, "这位用户是真人还是 AI？（可选）").get_by_role("radio", name="AI", exact=True)
    ).to_be_checked()
    _assert_blind(page_text(page), "labelling page (revisit)")
    shot(page, SHOTS / "staff-05-annotate-revisit.png")

    # Researcher pages stay out of reach, even by their address (the cookie keeps her logged in as
    # herself).
    for path in ("dashboard", "transcripts", "export", "adjudicate"):
        page.goto(f"{base}/{path}")
        expect(page.get_by_text("Log out (ann)")).to_be_visible()
        expect(page.get_by_text("Page not found")).to_be_visible()  # not her page: Streamlit says so
        expect(page.get_by_text("Dashboard: people vs simulated users")).to_have_count(0)
        expect(page.get_by_role("heading", name="Transcripts")).to_have_count(0)
        expect(page.get_by_role("heading", name="Export")).to_have_count(0)
        expect(page.get_by_role("heading", name="Adjudicate disagreements")).to_have_count(0)
        _assert_blind(page_text(page), f"page at /{path}")
    shot(page, SHOTS / "staff-06-annotator-research-url.png")
    # Logging out clears the cookie, so a reload shows the login form.
    page.keyboard.press("Escape")  # close the "Page not found" dialog
    expect(page.get_by_text("Page not found")).to_have_count(0)
    settle(page)
    click_until(page, page.get_by_text("Log out (ann)"), page.get_by_role("button", name="Log in"))
    expect(page.get_by_role("button", name="Log in")).to_be_visible()
    page.wait_for_function(f"!document.cookie.includes('wb_staff_{port}=')")
    page.reload()
    expect(page.get_by_role("button", name="Log in")).to_be_visible()
    expect(page.get_by_text("Log out (ann)")).to_have_count(0)
    page.close()

    # --- the researcher: home, dashboard (with drill-down), transcripts, export ---------------
    page = browser.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    page.set_default_timeout(30_000)
    browser_pages.append(page)
    _login(page, base, "rita")
    expect(page.get_by_role("heading", name="Studies")).to_be_visible()
    sidebar = page.locator('[data-testid="stSidebarNav"]')
    for research_page in ("Dashboard", "Transcripts", "Export", "Adjudicate"):
        expect(sidebar.get_by_text(research_page, exact=True)).to_be_visible()
    shot(page, SHOTS / "staff-07-researcher-home.png")

    sidebar.get_by_text("Dashboard", exact=True).click()
    expect(page.get_by_text("Dashboard: people vs simulated users")).to_be_visible()
    expect(page.get_by_text("12 human and 8 agent conversations")).to_be_visible(timeout=90_000)
    expect(page.get_by_text("Labels: imported:recllmsim-gpt4o (best available")).to_be_visible()
    # the fidelity section comes first: the ranking of simulators beside the human ceiling
    expect(page.get_by_text("Ranking of simulators")).to_be_visible(timeout=120_000)
    shot(page, SHOTS / "staff-08a-dashboard-fidelity.png")
    page.get_by_role("tab", name="Distributions").click()
    expect(page.get_by_text("Click a bar to list the conversations behind it.")).to_be_visible()
    chart = page.get_by_role("tabpanel").locator('[data-testid="stPlotlyChart"]').first
    expect(chart.locator(".bars .point path").first).to_be_attached()
    shot(page, SHOTS / "staff-08-dashboard.png")
    # Drill-down: a click on a bar selects its point; Streamlit reruns with the selection.
    bar = chart.locator(".bars .point path").first
    heading = page.get_by_text(re.compile(r"^\d+ (people's|simulated users') conversations with .+ = "))
    for attempt in range(3):  # plotly binds its click handlers a moment after the bars are drawn
        bar.click(force=True)
        try:
            expect(heading).to_be_visible(timeout=10_000)
            break
        except AssertionError:
            if attempt == 2:
                raise
    # the heading names the bar plainly (codebook titles): read the ids back through the codebook
    m = re.match(
        r"^(\d+) (people's|simulated users') conversations with (.+) = (.+) \((.+)\)$", heading.inner_text()
    )
    assert m, heading.inner_text()
    names = Names.of(load_codebook())
    dim = next(d for d, t in names.titles.items() if t == m[3])
    value = next(v for v, t in names.labels[dim].items() if t == m[4])
    n_listed, kind, scen = int(m[1]), "human" if m[2] == "people's" else "agent", m[5].replace(" ", "_")
    with Session(eng) as s:  # the bar's conversations, counted independently from the database
        src = s.exec(select(LabelSource).where(LabelSource.name == "imported:recllmsim-gpt4o")).one()
        q = (
            select(Conversation.id)
            .join(Label, Label.conversation_id == Conversation.id)
            .where(
                Label.source_id == src.id,
                Label.dimension == dim,
                Label.turn_index == -1,
                Label.value == value,
                Conversation.user_kind == kind,
            )
        )
        expected = set(s.exec(q).all())
        if scen != "all":
            expected &= set(
                s.exec(
                    select(Conversation.id).join(Condition).join(Scenario).where(Scenario.key == scen)
                ).all()
            )
    assert n_listed == len(expected) >= 1
    expect(page.locator('[data-testid="stChatMessage"]').first).to_be_visible()
    view_shot(page, heading, SHOTS / "staff-09-dashboard-drilldown.png")

    sidebar.get_by_text("Transcripts", exact=True).click()
    expect(page.get_by_text("20 conversations", exact=True)).to_be_visible()
    kind_box = page.locator('[data-testid="stSelectbox"]').filter(has_text="User kind")
    kind_box.click()
    page.get_by_role("option", name="human", exact=True).click()
    expect(page.get_by_text("12 conversations", exact=True)).to_be_visible()
    expect(page.get_by_text(re.compile(r"^Conversation \d+ \(human\)$"))).to_be_visible()
    expect(page.locator('[data-testid="stChatMessage"]').first).to_be_visible()
    shot(page, SHOTS / "staff-10-transcripts.png")
    view_shot(page, page.get_by_role("heading", name="Transcripts"), SHOTS / "staff-10a-transcripts-top.png")

    sidebar.get_by_text("Export", exact=True).click()
    expect(page.get_by_role("heading", name="Export")).to_be_visible()
    page.get_by_role("button", name="Export", exact=True).click()
    download = page.get_by_role("button", name=re.compile(r"^Download .*conversations.*\.jsonl$"))
    expect(download.first).to_be_visible()
    shot(page, SHOTS / "staff-11-export.png")
    with page.expect_download() as dl:
        download.first.click()
    lines = Path(dl.value.path()).read_text(encoding="utf-8").splitlines()
    assert len(lines) == 20
