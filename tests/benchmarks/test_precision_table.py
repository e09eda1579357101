"""benchmarks/precision_table.py's report rendering (the measurement itself is the benchmark's run)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from precision_table import ARTIFACTS, markdown, short_error


def _report() -> dict:
    ok = {"p50_ms": 3.0, "min_ms": 2.9, "ratio_to_eager": 0.3, "quietest_round_ratio": 0.31}
    return {
        "img_size": 64, "threads": 2, "held_out_images": 359, "pytorch_fp32_accuracy": 0.997,
        "pytorch_eager": {"p50_ms": 10.0, "ratio_to_eager": 1.0},
        "machine": {"cpu": "Test CPU", "cores": 2, "isa": ["avx2"], "torch": "t", "onnxruntime": "o",
                    "openvino": "v"},
        "artifacts": {
            "fp32": {"parity_passed": True, "export_s": 2.0, "flop_share": "fp32 100%", "top1_agreement": 1.0,
                     "worst_cosine": 1.0, "accuracy": 0.997, "onnxruntime": ok, "openvino": ok},
            "fp8 (gpu)": {"parity_passed": False, "parity_note": "CheckFailed: cosine", "export_s": 30.0,
                          "flop_share": "fp8 92%", "onnxruntime": ok,
                          "openvino": {"error": "UserInputError: cannot read"}},
            "broken": {"error": "ExportError: boom", "export_s": 1.0, "path": None},
        },
    }


def test_markdown_table_has_a_row_per_artifact_and_notes_for_failures():
    text = markdown(_report())
    assert "CPU: Test CPU, 2 cores (avx2)" in text
    assert "| fp32 | fp32 100% | 100.0% | 1.0000 | 99.7% | 2.0 | 3.00 (0.30x) | 3.00 (0.30x) |" in text
    assert "| fp8 (gpu) (parity failed) | fp8 92% | n/a | n/a | n/a | 30.0 | 3.00 (0.30x) | fails (see notes) |" in text
    assert "| broken | export failed |" in text
    assert "- fp8 (gpu) on openvino: UserInputError: cannot read" in text
    assert "- broken: export: ExportError: boom" in text


def test_short_error_keeps_the_first_line():
    assert short_error(RuntimeError("first\nsecond")) == "RuntimeError: first"


def test_the_five_artifacts_of_the_readme_table():
    assert [(p, t) for _, p, t in ARTIFACTS] == [("fp32", "gpu"), ("fp16", "gpu"), ("int8", "gpu"),
                                                ("fp8", "gpu"), ("int8", "cpu")]
