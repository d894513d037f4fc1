"""Running the netc command line in-process, as the CLI tests do."""

from __future__ import annotations

from netc.cli import main


def run_cli(capsys, *argv) -> tuple:
    """(exit status, stdout, stderr) of `netc ARGV`."""
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err
