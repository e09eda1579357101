"""`visualize`: the soft clusters of every GLMix stage, from PyTorch and optionally an ONNX."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

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
    checkpoint_source,
)


@app.command()
def visualize(
    ckpt: CkptOption,
    image: Annotated[Path, typer.Option("--image", help="An image file (PNG, JPEG, ...).")],
    out: Annotated[Path, typer.Option("--out", help="PNG to write.")] = Path("clusters.png"),
    model: Annotated[Optional[Path], typer.Option(
        "--model", help="ONNX exported with --cluster-logits: shown beside PyTorch, maps compared.")] = None,
    state_key: StateKeyOption = StateKey.auto,
    head_dim: HeadDimOption = None,
    num_slots: NumSlotsOption = None,
    model_config: ModelConfigOption = None,
    override: OverrideOption = False,
) -> None:
    """Colour every pixel by the GLMix slot it is clustered into, per stage, over the image."""
    from glmix_deploy.data.preprocess import Preprocessing
    from glmix_deploy.files import check_output_path
    from glmix_deploy.verify.visualize import agreement, onnx_slot_maps, torch_slot_maps
    from glmix_deploy.verify.visualize import render as render_png

    check_output_path(out, "--out")
    loaded = checkpoint_source(ckpt, state_key, head_dim, num_slots, model_config=model_config,
                               override=override).load()
    prep = Preprocessing.from_config(loaded.config)
    rgb = prep.crop(image)
    x = prep.normalize(rgb)[None]
    rows = [("PyTorch", torch_slot_maps(loaded.model, x))]
    note, agree = None, None
    if model is not None:
        rows.append((f"ONNX ({model.name})", onnx_slot_maps(model, loaded.model, x)))
        agree = agreement(rows[0][1], rows[1][1])
        note = f"ONNX and PyTorch agree on {agree:.2%} of pixels"
    render_png(rgb, rows, out, note=note)
    result = {"out": str(out), "stages": [m.stage for m in rows[0][1]],
              "blocks": [m.block for m in rows[0][1]], "pixel_agreement": agree}
    if State.json:
        render.print_json(result)
    else:
        render.step(f"wrote {out}" + (f" ({note})" if note else ""))
