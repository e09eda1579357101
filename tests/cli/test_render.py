"""The CLI's rendering of library progress lines: plain text, never rich markup."""

from __future__ import annotations

from glmix_deploy.cli import render


def test_library_progress_prints_brackets_literally_and_styles_warnings(capsys):
    render.progress("calibrating 3 tensors; caching the ranges in /tmp/[bold]cache/x.json")
    render.progress(f"{render.WARNING}calibrating on SYNTHETIC random inputs")
    err = capsys.readouterr().err
    assert "/tmp/[bold]cache/x.json" in err
    assert "WARNING: calibrating on SYNTHETIC" in err


def test_library_lines_name_flags_not_fields(capsys):
    from glmix_deploy.cli.main import command_flags

    render.use_flags(command_flags)  # what cli.main.run does
    render.progress("judged on the calibration images (no `holdout`)")
    render.note("the machine looks busy (fewer `threads` or an idle machine help); `not_an_option` stays")
    err = capsys.readouterr().err
    assert "(no --holdout)" in err and "fewer --threads" in err and "`not_an_option` stays" in err
