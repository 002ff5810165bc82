"""A bug inside mbpatch (not a bad input) still ends in one line and a non-zero exit, never a raw traceback;
MBPATCH_DEBUG=1 gives the traceback for the report."""

from __future__ import annotations

from click.testing import CliRunner

import mbpatch.cli as cli
import mbpatch.from_markers as from_markers


def boom(*args, **kwargs):
    raise ValueError("an unforeseen state")


def test_internal_error_is_one_line_exit_3(monkeypatch, ultralytics_checkout):
    root = ultralytics_checkout("8.4.190")
    monkeypatch.setattr(from_markers, "recover", boom)
    monkeypatch.delenv("MBPATCH_DEBUG", raising=False)
    result = CliRunner().invoke(cli.main, ["revert", "--repo", str(root), "--from-markers"])
    assert result.exit_code == 3
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "internal error in `revert`" in lines[0] and "an unforeseen state" in lines[0]
    assert "MBPATCH_DEBUG=1" in lines[0] and "Traceback" not in result.output

    monkeypatch.setenv("MBPATCH_DEBUG", "1")
    result = CliRunner().invoke(cli.main, ["revert", "--repo", str(root), "--from-markers"])
    assert isinstance(result.exception, ValueError)  # raised through, traceback and all
