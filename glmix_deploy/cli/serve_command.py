"""`serve` (registered on the shared app): open the artifact, start Triton through PyTriton, print the
endpoints and a ready line, run until SIGINT/SIGTERM."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from glmix_deploy.cli import render
from glmix_deploy.cli.app import State, app


@app.command()
def serve(
    model: Annotated[Path, typer.Option(
        "--model", help="Artifact to serve: .onnx, .xml (OpenVINO IR), .engine/.plan (TensorRT) or a checkpoint.")],
    ckpt: Annotated[Optional[Path], typer.Option(
        "--ckpt", help="Checkpoint for preprocessing constants and labels.txt when the artifact lacks them.")] = None,
    name: Annotated[str, typer.Option("--name", help="Triton model name.")] = "glnet",
    host: Annotated[str, typer.Option("--host", help="Address to bind (default loopback only).")] = "127.0.0.1",
    http_port: Annotated[int, typer.Option("--http-port", help="HTTP/REST port.")] = 8000,
    grpc_port: Annotated[int, typer.Option("--grpc-port", help="gRPC port.")] = 8001,
    metrics_port: Annotated[int, typer.Option("--metrics-port", help="Prometheus metrics port.")] = 8002,
    max_batch: Annotated[int, typer.Option("--max-batch", min=1, help="Triton max_batch_size.")] = 64,
    queue_delay_us: Annotated[int, typer.Option(
        "--queue-delay-us", min=0, help="Dynamic batcher max queue delay.")] = 100,
    no_dynamic_batching: Annotated[bool, typer.Option(
        "--no-dynamic-batching", help="Run every request alone (no dynamic batcher).")] = False,
    instances: Annotated[int, typer.Option("--instances", min=1, help="Model instances (one engine each).")] = 1,
    with_preprocess: Annotated[bool, typer.Option(
        "--with-preprocess", help="Also serve <name>_ensemble: encoded JPEG/PNG bytes, eval's preprocessing.")] = False,
    threads: Annotated[Optional[int], typer.Option("--threads", min=1, help="Threads per engine instance.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", help="Show Triton's own log.")] = False,
) -> None:
    """Serve an artifact on a real Triton Inference Server (PyTriton) with dynamic batching."""
    from glmix_deploy.serve import (
        ServeOptions,
        open_served_model,
        reopen,
        require_pytriton,
        start_server,
        wait_for_signal,
    )

    options = ServeOptions(name=name, host=host, http_port=http_port, grpc_port=grpc_port,
                           metrics_port=metrics_port, max_batch=max_batch, queue_delay_us=queue_delay_us,
                           dynamic_batching=not no_dynamic_batching, instances=instances,
                           with_preprocess=with_preprocess, threads=threads, verbose=verbose).validate()
    require_pytriton()  # exit 2 with the install hint before any loading
    progress = None if State.json else render.step
    first = open_served_model(model, ckpt=ckpt, threads=threads, with_preprocess=with_preprocess)
    served = [first]
    try:
        served += [reopen(first, threads=threads) for _ in range(instances - 1)]
        server = start_server(served, options, note=progress)
    except BaseException:
        for m in served:
            m.close()
        raise
    info = {"models": options.model_names, "endpoints": server.endpoints, "model": first.describe(),
            "started_s": round(server.started_s, 2)}
    if State.json:
        render.print_json({"ready": True, **info})
    else:
        for note in first.notes:
            render.step(note)
        shapes = ", ".join(f"{s.name} {s.dtype} {s.to_dict()['shape']}" for s in first.inputs)
        outputs = ", ".join(f"{s.name} {s.to_dict()['shape']}" for s in first.outputs)
        render.step(f"{model} on {first.kind}: {shapes}; task {first.task}: {outputs}; "
                    f"labels: {len(first.labels or [])}; "
                    f"max batch {options.max_batch}, dynamic batching "
                    f"{'off' if no_dynamic_batching else f'{options.queue_delay_us} us'}, {instances} instance(s)")
        for kind, url in server.endpoints.items():
            print(f"{kind:8} {url}")
        print(f"ready: {', '.join(options.model_names)} in {server.started_s:.1f}s (Ctrl-C or SIGTERM stops)")
    sys.stdout.flush()
    why = wait_for_signal(server)
    if not State.json:
        print(f"stopped ({why})")
    if why == "server exited":
        from glmix_deploy.errors import UserInputError

        raise UserInputError("Triton exited unexpectedly (rerun with --verbose for its log)")
