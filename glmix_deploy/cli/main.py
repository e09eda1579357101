"""The `glmix-deploy` command line: thin commands that parse, call the library and render.

One boundary (`run`) turns domain errors into exit codes:
0 success, 1 a check failed, 2 bad input/usage or a missing runtime, 3 internal error, 130 interrupted.
Heavy libraries (torch, onnx, onnxruntime) are imported inside commands so `--help` is instant.
"""

from __future__ import annotations

import functools
import os
import sys

import typer

from glmix_deploy.cli import render
from glmix_deploy.cli.app import (
    EXIT_CHECK_FAILED,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    State,
    app,
)


def _usage_error_types() -> tuple[type[Exception], ...]:
    """What the parser raises for an unknown option, a bad value or a missing argument: typer >= 0.25
    vendors click and its usage errors derive from typer.TyperException; older typer raises the
    click package's ClickException."""
    types: list[type[Exception]] = []
    if hasattr(typer, "TyperException"):
        types.append(typer.TyperException)
    try:
        import click
    except ImportError:
        pass
    else:
        types.append(click.ClickException)
    return tuple(types)


USAGE_ERRORS = _usage_error_types()


# Command modules register themselves on `app` when imported, in the order `--help` lists them.
from glmix_deploy.cli import inspect_command  # noqa: E402,F401,I001
from glmix_deploy.cli import export_command  # noqa: E402,F401
from glmix_deploy.cli import serve_command  # noqa: E402,F401
from glmix_deploy.cli import preflight_command  # noqa: E402,F401
from glmix_deploy.cli import verify_command, bench_command, eval_command  # noqa: E402,F401
from glmix_deploy.cli import visualize_command  # noqa: E402,F401


def _debug_requested(argv: list[str]) -> bool:
    return State.debug or "--debug" in argv or os.environ.get("GLMIX_DEPLOY_DEBUG") == "1"


@functools.cache
def command_flags() -> dict[str, str]:
    """Field -> flag of every command's options (cli.params.option_flags): built once, and only when
    a message names a field."""
    from glmix_deploy.cli.params import option_flags

    return option_flags(typer.main.get_command(app))


def user_message(exc: Exception) -> str:
    """The error's line in the command line's terms: the library names fields, the user typed flags
    (cli.params.flags_in)."""
    from glmix_deploy.cli.params import flags_in
    from glmix_deploy.models.loader import RecordedValueContradiction

    flags = command_flags()
    if isinstance(exc, RecordedValueContradiction):
        asked = (f"{exc.config_file} sets {exc.name}={exc.used}" if exc.config_file
                 else f"{flags.get(exc.name, exc.name)} {exc.used}")
        return (f"{asked} contradicts {exc.checkpoint}'s training config, which records {exc.name}={exc.recorded}; "
                f"pass --override to build the {exc.name}={exc.used} model anyway")
    return flags_in(str(exc), flags)


INTERRUPTED = "interrupted; no partial output was left behind"


def run(argv: list[str] | None = None) -> int:
    """Console-script entry point: the one place errors become exit codes."""
    from glmix_deploy.errors import CheckFailed, GlmixDeployError

    argv = sys.argv[1:] if argv is None else list(argv)
    command = typer.main.get_command(app)
    render.use_flags(command_flags)  # library progress lines name fields; the user sees flags
    try:
        rc = command.main(args=argv, prog_name="glmix-deploy", standalone_mode=False)
        if rc == EXIT_INTERRUPTED:  # typer turns Ctrl-C (KeyboardInterrupt) into this exit itself
            render.error(INTERRUPTED)
        return rc if isinstance(rc, int) else EXIT_OK
    except typer.Exit as exc:
        return exc.exit_code
    except USAGE_ERRORS as exc:  # unknown option, bad value, missing argument
        if _debug_requested(argv):
            raise
        render.error(exc.format_message().replace("\n", " "))
        return EXIT_USAGE
    except typer.Abort:
        render.error("aborted")
        return EXIT_INTERRUPTED
    except CheckFailed as exc:
        from glmix_deploy.cli.export_render import export_result
        from glmix_deploy.pipeline.export import ExportResult

        if State.json and exc.report is not None and hasattr(exc.report, "to_dict"):
            render.print_json({"passed": False, "error": user_message(exc), "result": exc.report.to_dict()})
        elif isinstance(exc.report, ExportResult):  # other reports were rendered case by case
            export_result(exc.report)
        if _debug_requested(argv):
            raise
        render.error(user_message(exc))
        return EXIT_CHECK_FAILED
    except GlmixDeployError as exc:
        if _debug_requested(argv):
            raise
        render.error(user_message(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        render.error(INTERRUPTED)
        return EXIT_INTERRUPTED
    except Exception as exc:  # a bug of ours: say so in one line, traceback with --debug
        if _debug_requested(argv):
            raise
        render.error(f"internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)")
        return EXIT_INTERNAL


def entry() -> None:
    sys.exit(run())


if __name__ == "__main__":  # pragma: no cover
    entry()
