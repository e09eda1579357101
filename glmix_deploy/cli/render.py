"""Human-readable rendering for the CLI (rich). Progress and errors go to stderr, results to stdout."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Mapping

from rich.console import Console
from rich.table import Table

from glmix_deploy.progress import WARNING

# Logs and pipes get a wide fixed width so tables are never truncated; terminals use their own.
out = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, soft_wrap=True, width=None if sys.stderr.isatty() else 160)


def note(message: str) -> None:
    """A library's note about a result (plain text, fields as flags), in yellow."""
    from rich.markup import escape

    err.print(f"[yellow]• {escape(_in_flags(message))}[/yellow]")


# Field -> flag of every command's options, asked for when a line names a field (cli.main.run sets
# cli.main.command_flags; this module cannot import cli.main, which imports it).
_flags: Callable[[], Mapping[str, str]] = dict


def use_flags(flags: Callable[[], Mapping[str, str]]) -> None:
    global _flags
    _flags = flags


def _in_flags(message: str) -> str:
    from glmix_deploy.cli.params import flags_in

    return flags_in(message, _flags()) if "`" in message else message


def error(message: str) -> None:
    # One plain line: CI logs and `2>` redirections read it as is.
    print(f"error: {message}", file=sys.stderr)


def step(message: str) -> None:
    """One of the CLI's own progress lines (rich markup)."""
    err.print(f"[cyan]•[/cyan] {message}")


def progress(message: str) -> None:
    """A library's progress line: plain text (brackets in paths or shapes are not markup) whose
    backquoted field names become flags, as in errors (cli.main.user_message)."""
    from rich.markup import escape

    message = _in_flags(message)
    if message.startswith(WARNING):
        err.print(f"[bold yellow]• {escape(message)}[/bold yellow]")
    else:
        err.print(f"[cyan]•[/cyan] {escape(message)}")


@contextlib.contextmanager
def status(message: str, enabled: bool = True):
    if not enabled or not err.is_terminal:
        yield
        return
    with err.status(message):
        yield


def print_json(data) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def loaded_line(loaded) -> None:
    key = loaded.state_key or "(bare state dict)"
    step(f"loaded {loaded.path.name}: {loaded.release}, {loaded.num_parameters / 1e6:.2f}M parameters, "
         f"weights from '{key}'")


_PIN_OPTIONS = {"head_dim": "--head-dim", "num_slots": "--num-slots"}
_CONFIG_FILE_ONLY = ("out_norm_eps",)  # pinned by a --model-config key, no option of its own


def overridden_warning(overridden: dict, subject: str) -> None:
    """One stderr line when a model was built, on request, from values that contradict the
    checkpoint's training config: it is not the model that was trained."""
    if not overridden:
        return
    values = ", ".join(f"{name}={v.get('used')} (training config: {v.get('recorded')})"
                       for name, v in overridden.items() if isinstance(v, dict))
    print(f"warning: {subject} overrides the checkpoint's training config: {values}; it is not the trained "
          "model", file=sys.stderr)


def assumed_warning(loaded) -> None:
    """One stderr line naming the values taken from official defaults, and how to pin them (and
    one naming the values overridden against the training config)."""
    overridden_warning(getattr(loaded, "overridden", {}), f"the model built from {loaded.path.name}")
    if not loaded.assumed:
        return
    values = ", ".join(f"{name}={getattr(loaded.config, name)}" for name in loaded.assumed)
    options = "".join(_PIN_OPTIONS.get(name, "--" + name.replace("_", "-")) + ", "
                      for name in loaded.assumed if name not in _CONFIG_FILE_ONLY)
    print(f"warning: assumed {values} (official defaults: no tensor or training config records them; a model "
          "trained otherwise gives other outputs): pin them with "
          f"{options.removesuffix(', ') + ' or ' if options else ''}"
          "--model-config FILE",
          file=sys.stderr)


def checkpoint_summary(summary: dict) -> None:
    cfg = summary["config"]
    table = Table(title=f"{summary['checkpoint']}", show_header=False, title_justify="left")
    table.add_column("field", style="bold")
    table.add_column("value")
    table.add_row("release", summary["release"])
    table.add_row("parameters", f"{summary['parameters']:,} ({summary['parameters'] / 1e6:.2f}M)")
    table.add_row("classes", str(summary["num_classes"]))
    table.add_row("input size", "x".join(map(str, summary["input_size"])))
    table.add_row("weights from", str(summary["state_key"] or "(bare state dict)"))
    table.add_row("sha256", summary["sha256"])
    for key in ("depths", "dims", "mlp_ratios", "mixing_modes", "head_dim", "slot_init", "num_slots",
                "local_dw_ks", "cpe_ks", "downsample_style", "transition_layout", "norm_layer",
                "mlp_dw", "layerscale", "use_slot_attention", "token_label_head", "in_chans"):
        value = cfg[key]
        text = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
        if key in summary.get("assumed", ()):
            text += (f"  [yellow](assumed: official default; pin with "
                     f"{_PIN_OPTIONS.get(key, '--model-config')})[/yellow]")
        table.add_row(key, text)
    for key, value in backbone_rows(summary):
        table.add_row(key, value)
    table.add_row("ignored", ", ".join(summary["ignored"]) or "-")
    out.print(table)


def backbone_rows(summary: dict) -> list[tuple[str, str]]:
    """What a checkpoint can be exported as, its per-stage output norms and what is left out."""
    rows = [("tasks", ", ".join(summary.get("tasks", ())))]
    norms = summary.get("output_norms") or {"convention": "none"}
    if norms["convention"] == "none":
        rows.append(("output norms", "none (features are the raw stage outputs)"))
    else:
        assumed = ("  [yellow](eps assumed: convention default; pin with out_norm_eps in --model-config)"
                   "[/yellow]" if norms.get("eps_assumed") else "")
        rows.append(("output norms", f"{norms['convention']} on stages {', '.join(map(str, norms['stages']))}, "
                                     f"eps {norms['eps']:g}{assumed}"))
    if not summary.get("config", {}).get("final_norm", True):
        rows.append(("final norm", "none (a backbone checkpoint)"))
    dropped = summary.get("not_exported") or {}
    if dropped:
        rows.append(("not exported", ", ".join(f"{prefix}.* ({count} tensors)" for prefix, count in dropped.items())))
    return rows


def parity_case(case) -> None:
    m = case.metrics
    mark = "[green]ok[/green]" if case.passed else "[red]FAIL[/red]"
    top1 = f"{m.top1:.0%}" if m.top1 is not None else "-"
    err.print(f"  {mark} {'x'.join(map(str, case.shape)):>14} {case.output}: max_abs {m.max_abs:.2e}  "
              f"max_rel {m.max_rel:.2e}  cosine {m.cosine:.7f}  top1 {top1}")
