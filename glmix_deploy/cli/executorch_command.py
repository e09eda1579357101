"""`export --fmt executorch`: the options the ExecuTorch target takes, its run and its rendering.

Called by `export` (cli/export_command.py) once the options common to every format are checked;
the ONNX route's own options, and the precisions and dynamic modes XNNPACK cannot take, were
refused there (option_rules.RULES).
"""

from __future__ import annotations

from pathlib import Path

from glmix_deploy.cli import render
from glmix_deploy.errors import UserInputError


def export_executorch_command(*, ckpt: Path, out: Path | None, force: bool, img_size: int | None, batch: int,
                              dynamic: str, max_batch: int | None, precision_options,
                              load_checkpoint) -> None:
    """Lower, verify and place the program; `load_checkpoint()` loads the model (after every check)."""
    from glmix_deploy.cli.app import State
    from glmix_deploy.exporters.executorch_sidecar import sidecar_path
    from glmix_deploy.pipeline.executorch import ExecuTorchOptions, export_executorch, program_path

    options = ExecuTorchOptions(img_size=img_size, batch=batch, dynamic=dynamic, max_batch=max_batch,
                                precision=precision_options)
    options.validate()
    target = program_path(out, ckpt)
    if not force and out is None and (existing := [p for p in (target, sidecar_path(target)) if p.exists()]):
        raise UserInputError(f"{', '.join(map(str, existing))} already exist(s) and --out does not name it; pass "
                             "--force to replace, or choose another --out")

    loaded = load_checkpoint()
    progress = None if State.json else render.progress
    on_case = None if State.json else render.parity_case
    result = export_executorch(loaded, target, options, progress=progress, on_parity_case=on_case)
    if State.json:
        render.print_json({"checkpoint": loaded.summary(), "executorch": result.to_dict()})
        return
    delegation = result.delegation
    render.out.print(f"[green]ExecuTorch program[/green] {result.path} ({result.precision}, XNNPACK, "
                         f"executorch {result.executorch_version}); sidecar {result.sidecar.name}")
    render.out.print(f"  delegated to XNNPACK: {100 * delegation.share:.2f}% of the linear-op FLOPs "
                         f"in {delegation.delegates} delegate(s)")
    if delegation.fallback_ops:
        for op, count in sorted(delegation.fallback_ops.items()):
            where = ", ".join(delegation.fallback_modules.get(op, [])) or "model top level"
            render.out.print(f"  portable kernel: {op} x{count} (in {where})")
    render.out.print(f"  {result.parity.summary_line()}")
