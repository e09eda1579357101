"""What an exported artifact offers, read from its files alone: its signature (tensors, batch range,
preprocessing, provenance, metadata, task, precision) and the class names beside it.

The layer sits between tensorrt/ (whose sidecar reader it uses) and exporters/: Triton repositories
(exporters/triton) and `serve` both read artifacts through it. The metadata entries themselves are
read by data/artifact_metadata.py (so that a client's Preprocessing.from_artifact needs nothing above
data/).
"""

from glmix_deploy.artifacts.labels import LABELS_FILE, read_labels
from glmix_deploy.artifacts.signature import (
    ArtifactSignature,
    check_servable,
    read_engine_signature,
    read_onnx_signature,
    read_openvino_signature,
    read_signature,
)

__all__ = ["LABELS_FILE", "ArtifactSignature", "check_servable", "read_engine_signature", "read_labels",
           "read_onnx_signature", "read_openvino_signature", "read_signature"]
