"""`workbench export` keeps earlier files unless told otherwise, and says why it cannot write."""

from __future__ import annotations

from tests.cli_helpers import run_cli


def _study(capsys) -> None:
    code, _, err = run_cli(
        ["study", "create", "exp", "--assistant-model", "scripted/echo", "--scenarios", "travel_planning"],
        capsys,
    )
    assert code == 0, err


def test_export_refuses_to_overwrite_without_force(tmp_path, capsys):
    _study(capsys)
    out = tmp_path / "out"
    assert run_cli(["export", "--study", "exp", "--out", str(out)], capsys)[0] == 0
    (out / "turns.csv").write_text("kept\n", encoding="utf-8")
    code, _, err = run_cli(["export", "--study", "exp", "--out", str(out)], capsys)
    assert code == 2 and "already holds" in err and "--force" in err and "Traceback" not in err
    assert (out / "turns.csv").read_text(encoding="utf-8") == "kept\n"  # nothing was overwritten
    # another format writes other files: no conflict; --force overwrites
    assert run_cli(["export", "--study", "exp", "--format", "parquet", "--out", str(out)], capsys)[0] == 0
    assert run_cli(["export", "--study", "exp", "--out", str(out), "--force"], capsys)[0] == 0
    assert (out / "turns.csv").read_text(encoding="utf-8") != "kept\n"


def test_export_to_an_unwritable_place_is_one_line(capsys):
    _study(capsys)
    code, _, err = run_cli(["export", "--study", "exp", "--out", "/proc/x"], capsys)
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
