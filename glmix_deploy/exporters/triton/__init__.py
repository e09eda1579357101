"""Triton Inference Server model repositories from a verified ONNX or a TensorRT engine.

Layout written under the repository folder (``<name>`` is ``TritonOptions.name``)::

    <repo>/<name>/config.pbtxt              platform onnxruntime_onnx | tensorrt_plan
    <repo>/<name>/labels.txt                only when class names are known
    <repo>/<name>/1/model.onnx              (+ its external-data file, if any)   or
    <repo>/<name>/1/model.plan              the TensorRT engine                                  or
    <repo>/<name>/1/model.py + model.onnx   backend python: model.py runs the ONNX (onnxruntime)  or
    <repo>/<name>/1/model.py + model.xml/.bin  ... the OpenVINO IR (OpenVINO), inside Triton
    # with_preprocess=True, in addition:
    <repo>/<name>_preprocess/config.pbtxt   Python backend: encoded image bytes -> input tensor
    <repo>/<name>_preprocess/1/model.py     self-contained (numpy + Pillow only)
    <repo>/<name>_ensemble/config.pbtxt     raw bytes -> <name>_preprocess -> <name>
    <repo>/<name>_ensemble/1/               (empty: ensembles need a version folder)

In pipeline order: options.py (the request, validated), the artifact's signature (its tensors, batch
range, preprocessing and provenance, read by glmix_deploy.artifacts: from the ONNX graph via
graph.onnx_io, or from the engine's sidecar via tensorrt.sidecar), tensors.py (numpy dtype -> TYPE_*,
dims without the batch axis),
config.py (config.pbtxt text), preprocess.py (the generated model.py, perf_analyzer data),
repository.py (checks, then every model folder staged beside the repository and renamed in).

A TensorRT engine is served from its sidecar (``<engine>.json``, the schema tensorrt/sidecar.py
owns): ``inputs``/``outputs`` ({name, shape with -1 for dynamic axes, dtype as a numpy name}) give
the tensors, whose batch axis must be -1; ``profiles`` ({input, min, opt, max}) give the largest
batch (per input the largest ``max[0]``; every input needs a profile starting at batch 1);
tensorrt_version, precision, gpu and the sha256s become comments at the top of config.pbtxt. The
preprocessing constants of ``with_preprocess`` are the ``preprocessing`` argument of
`write_triton_repository` if given, else the sidecar's ``preprocessing`` entry
({img_size, mean, std, crop_pct, interpolation}) if present, else its ``onnx.metadata``.
"""

from glmix_deploy.artifacts import (
    LABELS_FILE,
    ArtifactSignature,
    read_engine_signature,
    read_labels,
    read_onnx_signature,
    read_openvino_signature,
)
from glmix_deploy.exporters.triton.config import ensemble_config, model_config, preprocess_config
from glmix_deploy.exporters.triton.options import (
    DEFAULT_MAX_BATCH,
    ENSEMBLE_SUFFIX,
    IMAGE_INPUT,
    PREPROCESS_SUFFIX,
    TritonOptions,
)
from glmix_deploy.exporters.triton.preprocess import perf_analyzer_data, preprocess_model_source
from glmix_deploy.exporters.triton.python_model import python_model_source
from glmix_deploy.exporters.triton.repository import (
    TritonRepositoryResult,
    check_repository_target,
    write_triton_repository,
)
from glmix_deploy.exporters.triton.tensors import TRITON_TYPES, triton_dims, triton_type

__all__ = [
    "DEFAULT_MAX_BATCH", "ENSEMBLE_SUFFIX", "IMAGE_INPUT", "LABELS_FILE", "PREPROCESS_SUFFIX", "TRITON_TYPES",
    "ArtifactSignature", "TritonOptions", "TritonRepositoryResult", "check_repository_target", "ensemble_config",
    "model_config", "perf_analyzer_data", "preprocess_config", "preprocess_model_source", "python_model_source",
    "read_engine_signature", "read_labels", "read_onnx_signature", "read_openvino_signature", "triton_dims",
    "triton_type", "write_triton_repository",
]
