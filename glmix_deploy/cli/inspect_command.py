"""`inspect` (registered on the shared app): the GLNet configuration a checkpoint's tensors
describe, and what was assumed."""

from __future__ import annotations

from glmix_deploy.cli import render
from glmix_deploy.cli.app import (
    CkptOption,
    HeadDimOption,
    ModelConfigOption,
    NumSlotsOption,
    OverrideOption,
    State,
    StateKey,
    StateKeyOption,
    app,
    load,
)


@app.command()
def inspect(
    ckpt: CkptOption,
    state_key: StateKeyOption = StateKey.auto,
    head_dim: HeadDimOption = None,
    num_slots: NumSlotsOption = None,
    model_config: ModelConfigOption = None,
    override: OverrideOption = False,
) -> None:
    """Show the GLNet configuration inferred from a checkpoint's tensors (and what was assumed)."""
    loaded = load(ckpt, state_key, head_dim, num_slots, model_config=model_config, override=override)
    summary = loaded.summary()
    if State.json:
        render.print_json(summary)
    else:
        render.checkpoint_summary(summary)
        render.assumed_warning(loaded)
