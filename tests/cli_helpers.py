"""Running the CLI in-process in tests: exit code, stdout and stderr."""

from __future__ import annotations


def run_cli(args, capsys) -> tuple[int, str, str]:
    from workbench.cli import main

    code = 0
    try:
        main(args)
    except SystemExit as exc:
        code = exc.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err
