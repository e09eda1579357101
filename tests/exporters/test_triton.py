"""Triton repositories: configs parsed with Triton's own ModelConfig schema, checked against the
artifact; the generated Python-backend preprocessing against glmix_deploy's; atomic, no-clobber
writes; TensorRT-backend configs from an engine sidecar."""

from __future__ import annotations

import ast
import base64
import importlib.util
import json
import struct
import sys
import types
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from PIL import Image

from glmix_deploy.errors import UserInputError
from glmix_deploy.exporters.onnx_export import ExportOptions, export_onnx
from glmix_deploy.exporters.triton import (
    TritonOptions,
    find_sidecar,
    perf_analyzer_data,
    preprocess_model_source,
    read_labels,
    write_triton_repository,
)
from glmix_deploy.models.loader import LoadedCheckpoint, load_checkpoint
from glmix_deploy.data.preprocess import Preprocessing
from tests.factory import TINY, random_glnet, save_training_checkpoint

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLE_VAL = REPO_ROOT / "samples" / "digits" / "val"
_ONNX_TO_TRITON = {1: "TYPE_FP32", 10: "TYPE_FP16", 7: "TYPE_INT64", 6: "TYPE_INT32"}


# --------------------------------------------------------------------------- helpers shared with the CLI tests


def parse_config(path: Path):
    """config.pbtxt through Triton's own schema; unknown fields or bad enums raise ParseError."""
    model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")
    from google.protobuf import text_format

    return text_format.Parse(Path(path).read_text(), model_config_pb2.ModelConfig())


def type_name(config, value: int) -> str:
    return type(config).DESCRIPTOR.fields_by_name["input"].message_type.fields_by_name[
        "data_type"].enum_type.values_by_number[value].name


def onnx_io(path: Path) -> dict[str, dict[str, tuple[list[int], str]]]:
    """{'input'|'output': {name: (dims without batch, -1 if symbolic), Triton type)}} read with onnx."""
    model = onnx.load(str(path), load_external_data=False)
    inits = {t.name for t in model.graph.initializer}
    out = {}
    for what, values in (("input", model.graph.input), ("output", model.graph.output)):
        out[what] = {}
        for vi in values:
            if vi.name in inits:
                continue
            dims = [d.dim_value if d.HasField("dim_value") else -1 for d in vi.type.tensor_type.shape.dim]
            out[what][vi.name] = (dims[1:], _ONNX_TO_TRITON[vi.type.tensor_type.elem_type])
    return out


def assert_config_matches_onnx(config, onnx_file: Path) -> None:
    io_ = onnx_io(onnx_file)
    for what, tensors in (("input", config.input), ("output", config.output)):
        got = {t.name: (list(t.dims), type_name(config, t.data_type)) for t in tensors}
        assert got == io_[what], (what, got, io_[what])


def check_ensemble(repo: Path, name: str, onnx_file: Path | None = None) -> None:
    """The ensemble's plumbing: raw bytes -> <name>_preprocess -> <name>, names/dims/types line up."""
    model = parse_config(repo / name / "config.pbtxt")
    pre = parse_config(repo / f"{name}_preprocess" / "config.pbtxt")
    ens = parse_config(repo / f"{name}_ensemble" / "config.pbtxt")
    assert (repo / f"{name}_ensemble" / "1").is_dir()
    assert (repo / f"{name}_preprocess" / "1" / "model.py").is_file()
    assert pre.backend == "python" and ens.platform == "ensemble"
    assert model.max_batch_size == pre.max_batch_size == ens.max_batch_size
    [raw] = ens.input
    assert type_name(ens, raw.data_type) == "TYPE_STRING" and list(raw.dims) == [1]
    [pre_in] = pre.input
    assert (pre_in.name, list(pre_in.dims), pre_in.data_type) == (raw.name, [1], raw.data_type)
    [pre_out] = pre.output
    [model_in] = model.input
    assert pre_out.name == model_in.name and pre_out.data_type == model_in.data_type
    assert all(m in (-1, p) for p, m in zip(pre_out.dims, model_in.dims)) and len(pre_out.dims) == len(model_in.dims)
    assert -1 not in pre_out.dims
    assert [(o.name, list(o.dims), o.data_type) for o in ens.output] == \
           [(o.name, list(o.dims), o.data_type) for o in model.output]
    first, second = ens.ensemble_scheduling.step
    assert first.model_name == f"{name}_preprocess" and second.model_name == name
    assert dict(first.input_map) == {raw.name: raw.name}
    staged = first.output_map[pre_out.name]
    assert dict(second.input_map) == {model_in.name: staged}
    assert dict(second.output_map) == {o.name: o.name for o in ens.output}
    if onnx_file is not None:
        assert_config_matches_onnx(model, onnx_file)


def load_generated(model_py: Path, module_name: str = "generated_preprocess"):
    spec = importlib.util.spec_from_file_location(module_name, model_py)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_images(folder: Path) -> list[Path]:
    """Real image files of assorted sizes, modes and formats (plus a few digits samples if present)."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for i, (w, h, mode, fmt) in enumerate([(100, 80, "RGB", "PNG"), (640, 480, "RGB", "JPEG"),
                                           (50, 300, "L", "PNG"), (73, 73, "RGBA", "PNG"),
                                           (257, 129, "RGB", "JPEG"), (64, 64, "P", "PNG"), (33, 1000, "RGB", "PNG")]):
        channels = {"RGB": 3, "L": 1, "RGBA": 4, "P": 1}[mode]
        pixels = rng.integers(0, 256, size=(h, w, channels), dtype=np.uint8)
        # Smooth gradients too, so resampling is exercised on structure and not only on noise.
        pixels[: h // 2] = (np.linspace(0, 255, w, dtype=np.uint8)[None, :, None]).repeat(h // 2, 0)
        img = Image.fromarray(pixels[..., 0] if channels == 1 else pixels, "L" if channels == 1 else mode)
        if mode == "P":
            img = img.convert("P")
        path = folder / f"img{i}.{fmt.lower().replace('jpeg', 'jpg')}"
        img.save(path, fmt)
        files.append(path)
    if SAMPLE_VAL.is_dir():
        files += sorted(SAMPLE_VAL.glob("*/*.png"))[:3]
    return files


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> LoadedCheckpoint:
    root = tmp_path_factory.mktemp("tiny")
    return load_checkpoint(save_training_checkpoint(root / "tiny.pth", random_glnet(TINY), root))


@pytest.fixture(scope="module")
def onnx_batch(tiny, tmp_path_factory) -> Path:
    """Dynamic batch up to 8."""
    out = tmp_path_factory.mktemp("onnx_batch") / "tiny.onnx"
    export_onnx(tiny, out, ExportOptions(dynamic="batch", max_batch=8))
    return out


@pytest.fixture(scope="module")
def onnx_all(tiny, tmp_path_factory) -> Path:
    """Dynamic batch, height and width."""
    out = tmp_path_factory.mktemp("onnx_all") / "tiny.onnx"
    export_onnx(tiny, out, ExportOptions(dynamic="all", max_batch=4))
    return out


@pytest.fixture(scope="module")
def onnx_static(tiny, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("onnx_static") / "tiny.onnx"
    export_onnx(tiny, out, ExportOptions())
    return out


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_schema_check_is_strict(tmp_path: Path) -> None:
    """The parser the tests rely on rejects what Triton would reject."""
    from google.protobuf.text_format import ParseError

    good = tmp_path / "good.pbtxt"
    good.write_text('name: "m"\nmax_batch_size: 2\ninput [ { name: "x" data_type: TYPE_FP32 dims: [ 3 ] } ]\n')
    assert parse_config(good).input[0].dims == [3]
    for bad in ('name: "m"\nmax_batch: 2\n', 'input [ { name: "x" data_type: TYPE_FLOAT32 } ]\n',
                'instance_group [ { kind: GPU } ]\n'):
        (tmp_path / "bad.pbtxt").write_text(bad)
        with pytest.raises(ParseError):
            parse_config(tmp_path / "bad.pbtxt")


# --------------------------------------------------------------------------- options


@pytest.mark.parametrize("kwargs, reason", [
    (dict(max_batch=16, preferred_batch="8,32"), "exceeds --max-batch 16"),
    (dict(preferred_batch="0,8"), "positive"),
    (dict(preferred_batch="-4"), "positive"),
    (dict(preferred_batch="8,8"), "repeats"),
    (dict(preferred_batch="8,x"), "comma-separated integers"),
    (dict(max_batch=0, preferred_batch=""), "--max-batch"),
    (dict(queue_delay_us=-1), "--queue-delay-us"),
    (dict(instances=0), "--instances"),
    (dict(kind="tpu"), "--kind"),
    (dict(backend="tensorflow"), "--backend"),
    (dict(backend="tensorrt", kind="cpu"), "GPUs only"),
    (dict(name="../escape"), "model name"),
    (dict(name=""), "model name"),
    (dict(name="a b"), "model name"),
])
def test_bad_options_are_user_errors_with_a_reason(kwargs: dict, reason: str) -> None:
    with pytest.raises(UserInputError, match=reason.replace("-", r"\-")) as info:
        TritonOptions(**kwargs).validate()
    assert info.value.exit_code == 2


def test_good_options() -> None:
    opts = TritonOptions(preferred_batch=" 4, 2 ,1", max_batch=4).validate()
    assert opts.preferred_batch == (4, 2, 1)
    assert TritonOptions(preferred_batch="").validate().preferred_batch == ()
    assert TritonOptions(with_preprocess=True).model_names == ["glnet_preprocess", "glnet", "glnet_ensemble"]


# --------------------------------------------------------------------------- onnxruntime backend


def test_onnx_repository_passes_triton_schema_and_matches_the_onnx(onnx_batch: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    labels = [f"class {i}" for i in range(10)]
    opts = TritonOptions(name="glnet", max_batch=8, preferred_batch="2,4,8", queue_delay_us=250, instances=3,
                         kind="cpu", with_preprocess=True)
    result = write_triton_repository(onnx_batch, repo, opts, labels)

    config = parse_config(repo / "glnet" / "config.pbtxt")
    assert config.name == "glnet" and config.platform == "onnxruntime_onnx" and config.backend == "onnxruntime"
    assert config.max_batch_size == 8
    assert list(config.dynamic_batching.preferred_batch_size) == [2, 4, 8]
    assert config.dynamic_batching.max_queue_delay_microseconds == 250
    [group] = config.instance_group
    assert group.count == 3 and group.kind == type(group).Kind.Value("KIND_CPU")
    assert_config_matches_onnx(config, onnx_batch)
    assert [(t.name, list(t.dims)) for t in config.input] == [("images", [3, 64, 64])]
    assert [(t.name, list(t.dims), t.label_filename) for t in config.output] == [("logits", [10], "labels.txt")]
    assert read_labels(repo / "glnet" / "labels.txt") == labels
    assert (repo / "glnet" / "1" / "model.onnx").read_bytes() == onnx_batch.read_bytes()
    check_ensemble(repo, "glnet", onnx_batch)
    assert parse_config(repo / "glnet_ensemble" / "config.pbtxt").output[0].label_filename == "labels.txt"
    assert read_labels(repo / "glnet_ensemble" / "labels.txt") == labels

    assert sorted(result.models) == ["glnet", "glnet_ensemble", "glnet_preprocess"]
    assert result.to_dict()["inputs"] == [{"name": "images", "dims": [3, 64, 64], "data_type": "TYPE_FP32"}]
    assert _leftovers(tmp_path) == [] and _leftovers(repo) == []
    assert sorted(p.name for p in repo.iterdir()) == ["glnet", "glnet_ensemble", "glnet_preprocess"]


def test_dynamic_height_width_become_minus_one(onnx_all: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    write_triton_repository(onnx_all, repo, TritonOptions(name="dyn", max_batch=4, preferred_batch="2,4",
                                                         with_preprocess=True))
    config = parse_config(repo / "dyn" / "config.pbtxt")
    assert [list(t.dims) for t in config.input] == [[3, -1, -1]]
    assert not config.output[0].label_filename and not (repo / "dyn" / "labels.txt").exists()
    assert_config_matches_onnx(config, onnx_all)
    check_ensemble(repo, "dyn", onnx_all)
    # The preprocess model still produces the checkpoint's own size.
    assert list(parse_config(repo / "dyn_preprocess" / "config.pbtxt").output[0].dims) == [3, 64, 64]


def test_max_batch_beyond_the_onnx_range_is_refused(onnx_batch: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    with pytest.raises(UserInputError, match=r"--max-batch 16 exceeds .*max batch 8"):
        write_triton_repository(onnx_batch, repo, TritonOptions(max_batch=16, preferred_batch="8,16"))
    assert not (repo / "glnet").exists() and _leftovers(tmp_path) == []


def test_static_batch_axis_is_refused(onnx_static: Path, tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="batch axis .* is fixed at 1"):
        write_triton_repository(onnx_static, tmp_path / "repo", TritonOptions(max_batch=8, preferred_batch="8"))
    assert not (tmp_path / "repo" / "glnet").exists()


def test_labels_must_match_the_class_count(onnx_batch: Path, tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="3 labels given but output 'logits' has 10 classes"):
        write_triton_repository(onnx_batch, tmp_path / "repo", TritonOptions(max_batch=8, preferred_batch="8"),
                                ["a", "b", "c"])


def test_existing_model_is_kept_without_force_and_replaced_with_it(onnx_batch: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    write_triton_repository(onnx_batch, repo, TritonOptions(max_batch=8, preferred_batch="8"))
    (repo / "glnet" / "marker").write_text("old")
    before = (repo / "glnet" / "config.pbtxt").read_text()

    with pytest.raises(UserInputError, match="already exist.*--force") as info:
        write_triton_repository(onnx_batch, repo, TritonOptions(max_batch=4, preferred_batch="4"))
    assert info.value.exit_code == 2
    assert (repo / "glnet" / "config.pbtxt").read_text() == before and (repo / "glnet" / "marker").exists()
    # Only the missing ensemble parts would be new, but the model itself exists: still refused.
    with pytest.raises(UserInputError, match="glnet"):
        write_triton_repository(onnx_batch, repo, TritonOptions(max_batch=8, preferred_batch="8",
                                                                with_preprocess=True))
    assert sorted(p.name for p in repo.iterdir()) == ["glnet"]

    write_triton_repository(onnx_batch, repo, TritonOptions(max_batch=4, preferred_batch="4", force=True))
    assert parse_config(repo / "glnet" / "config.pbtxt").max_batch_size == 4
    assert not (repo / "glnet" / "marker").exists()  # replaced as a whole, not merged
    assert _leftovers(tmp_path) == [] and sorted(p.name for p in repo.iterdir()) == ["glnet"]


def test_other_models_in_the_repository_are_left_alone(onnx_batch: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "resnet" / "1").mkdir(parents=True)
    (repo / "resnet" / "config.pbtxt").write_text('name: "resnet"\n')
    write_triton_repository(onnx_batch, repo, TritonOptions(max_batch=8, preferred_batch="8", force=True))
    assert (repo / "resnet" / "config.pbtxt").read_text() == 'name: "resnet"\n'
    assert (repo / "glnet" / "1" / "model.onnx").is_file()


def test_repository_path_that_is_a_file_is_refused(onnx_batch: Path, tmp_path: Path) -> None:
    (tmp_path / "repo").write_text("not a folder")
    with pytest.raises(UserInputError, match="not a directory"):
        write_triton_repository(onnx_batch, tmp_path / "repo", TritonOptions(max_batch=8, preferred_batch="8"))


# --------------------------------------------------------------------------- Python-backend preprocessing


def test_generated_preprocessing_equals_glmix_preprocessing(onnx_batch: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    write_triton_repository(onnx_batch, repo, TritonOptions(max_batch=8, preferred_batch="8", with_preprocess=True))
    model_py = repo / "glnet_preprocess" / "1" / "model.py"
    source = model_py.read_text()
    imported = {alias.name.split(".")[0] for node in ast.walk(ast.parse(source))
                if isinstance(node, (ast.Import, ast.ImportFrom))
                for alias in (node.names if isinstance(node, ast.Import) else [ast.alias(node.module or "")])}
    assert imported <= {"io", "math", "numpy", "PIL", "triton_python_backend_utils"}, imported
    assert "glmix_deploy" not in source

    module = load_generated(model_py)  # no Triton here: the module must import without it
    meta = {p.key: p.value for p in onnx.load(str(onnx_batch)).metadata_props}
    reference = Preprocessing.from_metadata(meta)
    assert (module.IMG_SIZE, module.MEAN, module.STD, module.CROP_PCT, module.INTERPOLATION) == \
           (reference.img_size, reference.mean, reference.std, reference.crop_pct, reference.interpolation)
    images = make_images(tmp_path / "images")
    for path in images:
        got = module.preprocess(path.read_bytes())
        want = reference.load(path)
        assert got.dtype == np.float32 and got.shape == want.shape == (3, 64, 64), path.name
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6, err_msg=path.name)
    batch = module.preprocess_batch([p.read_bytes() for p in images[:4]])
    assert batch.shape == (4, 3, 64, 64) and batch.dtype == np.float32


@pytest.mark.parametrize("pre", [
    Preprocessing(img_size=96, mean=(0.5, 0.5, 0.5), std=(0.25, 0.5, 0.125), crop_pct=0.95,
                  interpolation="bilinear"),
    Preprocessing(img_size=40, crop_pct=1.0, interpolation="nearest"),
    Preprocessing(img_size=57, crop_pct=0.9, interpolation="lanczos"),
], ids=["bilinear", "nearest", "lanczos"])
def test_generated_preprocessing_follows_other_constants(pre: Preprocessing, tmp_path: Path) -> None:
    model_py = tmp_path / "model.py"
    model_py.write_text(preprocess_model_source(pre, output_name="images"))
    module = load_generated(model_py, f"generated_{pre.interpolation}")
    for path in make_images(tmp_path / "images"):
        np.testing.assert_allclose(module.preprocess(path.read_bytes()), pre.load(path), rtol=0, atol=1e-6,
                                   err_msg=path.name)


def _fake_pb_utils() -> types.ModuleType:
    """The few names of Triton's triton_python_backend_utils the generated model touches."""
    pb = types.ModuleType("triton_python_backend_utils")

    class Tensor:
        def __init__(self, name, array):
            self.name, self.array = name, array

        def as_numpy(self):
            return self.array

    class InferenceResponse:
        def __init__(self, output_tensors, error=None):
            self.output_tensors, self.error = output_tensors, error

    class TritonError(Exception):
        pass

    pb.Tensor, pb.InferenceResponse, pb.TritonError = Tensor, InferenceResponse, TritonError
    pb.get_input_tensor_by_name = lambda request, name: request[name]
    return pb


def test_generated_model_serves_a_batch_like_the_exported_onnx(onnx_batch: Path, tiny: LoadedCheckpoint,
                                                                tmp_path: Path, monkeypatch) -> None:
    """execute() as Triton calls it (BYTES input of shape [batch, 1]), then the repository's ONNX:
    the ensemble's arithmetic equals PyTorch on glmix_deploy's own preprocessing."""
    repo = tmp_path / "repo"
    write_triton_repository(onnx_batch, repo, TritonOptions(max_batch=8, preferred_batch="8", with_preprocess=True))
    module = load_generated(repo / "glnet_preprocess" / "1" / "model.py", "generated_execute")
    pb = _fake_pb_utils()
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", pb)
    model = module.TritonPythonModel()
    model.initialize({})
    images = make_images(tmp_path / "images")[:5]
    raw = np.array([[p.read_bytes()] for p in images], dtype=object)
    good, bad = {"image_bytes": pb.Tensor("image_bytes", raw)}, \
        {"image_bytes": pb.Tensor("image_bytes", np.array([[b"not an image"]], dtype=object))}
    ok, failed = model.execute([good, bad])
    assert failed.error is not None and failed.output_tensors == []
    [tensor] = ok.output_tensors
    assert ok.error is None and tensor.name == "images" and tensor.array.shape == (5, 3, 64, 64)

    reference = Preprocessing.from_config(tiny.config)
    expected_input = np.stack([reference.load(p) for p in images])
    np.testing.assert_allclose(tensor.array, expected_input, rtol=0, atol=1e-6)
    session = ort.InferenceSession(str(repo / "glnet" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    logits = session.run(None, {"images": tensor.array})[0]
    with torch.no_grad():
        expected = tiny.model(torch.from_numpy(expected_input)).numpy()
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)


def test_perf_analyzer_data_is_length_prefixed_bytes(tmp_path: Path) -> None:
    images = make_images(tmp_path / "images")[:2]
    data = perf_analyzer_data(images)
    assert len(data["data"]) == 2
    for entry, path in zip(data["data"], images):
        assert entry["image_bytes"]["shape"] == [1]
        payload = base64.b64decode(entry["image_bytes"]["content"]["b64"])
        (length,) = struct.unpack("<I", payload[:4])
        assert length == path.stat().st_size and payload[4:] == path.read_bytes()
    json.dumps(data)


# --------------------------------------------------------------------------- tensorrt backend from a sidecar


def _engine_with_sidecar(folder: Path, *, max_batch: int = 32, batch_axis: int = -1, name: str = "glnet.engine",
                         sidecar_name: str | None = None, preprocessing: dict | None = None) -> Path:
    """A stand-in engine file (opaque bytes: nothing here reads engines) and the sidecar the
    TensorRT build writes beside it."""
    folder.mkdir(parents=True, exist_ok=True)
    engine = folder / name
    engine.write_bytes(b"\x00TRT-ENGINE-PLACEHOLDER" + bytes(range(256)))
    sidecar = {
        "format": "glmix-deploy.tensorrt-engine", "format_version": 1,
        "tensorrt_version": "10.3.0", "gpu": {"name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"},
        "precision": "fp16",
        "inputs": [{"name": "images", "shape": [batch_axis, 3, 224, 224], "dtype": "float32"}],
        "outputs": [{"name": "logits", "shape": [batch_axis, 1000], "dtype": "float16"}],
        "profiles": [{"input": "images", "min": [1, 3, 224, 224], "opt": [8, 3, 224, 224],
                      "max": [max_batch, 3, 224, 224]}],
        "checkpoint_sha256": "ab" * 32,
        "onnx": {"file": "glnet.onnx", "sha256": "cd" * 32, "metadata": {}},
    }
    if preprocessing is not None:
        sidecar["preprocessing"] = preprocessing
    (folder / (sidecar_name or name + ".json")).write_text(json.dumps(sidecar))
    return engine


def test_tensorrt_config_from_engine_sidecar_passes_schema(tmp_path: Path) -> None:
    engine = _engine_with_sidecar(tmp_path / "build", max_batch=32)
    repo = tmp_path / "repo"
    labels = [f"n{i:08d}" for i in range(1000)]
    opts = TritonOptions(backend="tensorrt", max_batch=32, preferred_batch="8,16,32", instances=2)
    result = write_triton_repository(engine, repo, opts, labels)
    config = parse_config(repo / "glnet" / "config.pbtxt")
    assert config.platform == "tensorrt_plan" and config.backend == "tensorrt"
    assert config.max_batch_size == 32 and list(config.dynamic_batching.preferred_batch_size) == [8, 16, 32]
    assert [(t.name, list(t.dims), type_name(config, t.data_type)) for t in config.input] == \
           [("images", [3, 224, 224], "TYPE_FP32")]
    assert [(t.name, list(t.dims), type_name(config, t.data_type), t.label_filename) for t in config.output] == \
           [("logits", [1000], "TYPE_FP16", "labels.txt")]
    [group] = config.instance_group
    assert group.count == 2 and group.kind == type(group).Kind.Value("KIND_GPU")
    assert (repo / "glnet" / "1" / "model.plan").read_bytes() == engine.read_bytes()
    assert not (repo / "glnet" / "1" / "model.onnx").exists()
    text = (repo / "glnet" / "config.pbtxt").read_text()
    assert "onnx_sha256: " + "cd" * 32 in text and "tensorrt_version: 10.3.0" in text
    assert "gpu: NVIDIA H100 80GB HBM3 (compute capability 9.0)" in text
    assert result.artifact_max_batch == 32


def test_tensorrt_ensemble_uses_sidecar_preprocessing(tmp_path: Path) -> None:
    pre = {"img_size": 224, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "crop_pct": 0.9,
           "interpolation": "bilinear"}
    engine = _engine_with_sidecar(tmp_path / "build", preprocessing=pre, sidecar_name="glnet.json")
    repo = tmp_path / "repo"
    write_triton_repository(engine, repo, TritonOptions(backend="tensorrt", max_batch=16, preferred_batch="16",
                                                        with_preprocess=True))
    check_ensemble(repo, "glnet")
    module = load_generated(repo / "glnet_preprocess" / "1" / "model.py", "generated_trt")
    assert (module.IMG_SIZE, module.CROP_PCT, module.INTERPOLATION) == (224, 0.9, "bilinear")
    image = make_images(tmp_path / "images")[1]
    np.testing.assert_allclose(module.preprocess(image.read_bytes()),
                               Preprocessing(224, tuple(pre["mean"]), tuple(pre["std"]), 0.9, "bilinear").load(image),
                               rtol=0, atol=1e-6)


def test_tensorrt_profile_smaller_than_max_batch_is_refused(tmp_path: Path) -> None:
    engine = _engine_with_sidecar(tmp_path / "build", max_batch=8)
    with pytest.raises(UserInputError,
                       match=r"--max-batch 64 exceeds the engine's optimization profiles \(max batch 8\)"):
        write_triton_repository(engine, tmp_path / "repo", TritonOptions(backend="tensorrt"))
    assert not (tmp_path / "repo" / "glnet").exists()


def test_tensorrt_static_batch_or_missing_sidecar_is_refused(tmp_path: Path) -> None:
    engine = _engine_with_sidecar(tmp_path / "static", batch_axis=4)
    with pytest.raises(UserInputError, match="batch axis of 'images' is fixed at 4"):
        write_triton_repository(engine, tmp_path / "repo", TritonOptions(backend="tensorrt", max_batch=4,
                                                                         preferred_batch="4"))
    lone = tmp_path / "lone" / "x.engine"
    lone.parent.mkdir()
    lone.write_bytes(b"engine")
    with pytest.raises(UserInputError, match="no sidecar JSON"):
        find_sidecar(lone)
    with pytest.raises(UserInputError, match="no sidecar JSON"):
        write_triton_repository(lone, tmp_path / "repo", TritonOptions(backend="tensorrt"))
    (tmp_path / "lone" / "x.engine.json").write_text(json.dumps({"inputs": [], "outputs": []}))
    with pytest.raises(UserInputError, match="'inputs' must be a non-empty list"):
        write_triton_repository(lone, tmp_path / "repo", TritonOptions(backend="tensorrt"))
    with pytest.raises(UserInputError, match="needs the preprocessing constants"):
        write_triton_repository(_engine_with_sidecar(tmp_path / "nopre"), tmp_path / "repo",
                                TritonOptions(backend="tensorrt", max_batch=32, with_preprocess=True))


def test_tensorrt_config_from_the_sidecar_the_engine_build_writes(onnx_batch: Path, tmp_path: Path) -> None:
    """Producer/consumer contract: a sidecar made by exporters/tensorrt_build.py for a real ONNX
    (only the engine bytes are a stand-in) gives a config whose tensors match that ONNX, and its
    embedded ONNX metadata drives the ensemble's preprocessing."""
    try:
        from glmix_deploy.tensorrt.preflight import graph_io, metadata
        from glmix_deploy.tensorrt.build import GpuInfo, derive_profiles, sidecar_content, write_sidecar
    except ImportError as exc:  # the TensorRT build module is someone else's and may be absent
        pytest.skip(f"tensorrt_build not available: {exc}")
    model = onnx.load(str(onnx_batch))
    inputs, outputs = graph_io(model)
    engine = tmp_path / "build" / "tiny.engine"
    engine.parent.mkdir()
    engine.write_bytes(b"stand-in engine bytes")
    write_sidecar(engine, sidecar_content(
        engine=engine, onnx_path=onnx_batch, onnx_sha256="ef" * 32, onnx_metadata=metadata(model),
        tensorrt_version="10.3.0", gpu=GpuInfo("NVIDIA H100 80GB HBM3", "9.0"), precision="fp32",
        profiles=derive_profiles(model), inputs=inputs, outputs=outputs, backend="python", workspace_gib=4.0,
        builder_level=3, timing_cache=None, build_seconds=1.0))
    repo = tmp_path / "repo"
    write_triton_repository(engine, repo, TritonOptions(backend="tensorrt", max_batch=8, preferred_batch="4,8",
                                                        with_preprocess=True))
    config = parse_config(repo / "glnet" / "config.pbtxt")
    assert config.platform == "tensorrt_plan"
    assert_config_matches_onnx(config, onnx_batch)
    check_ensemble(repo, "glnet", onnx_batch)
    module = load_generated(repo / "glnet_preprocess" / "1" / "model.py", "generated_from_sidecar")
    reference = Preprocessing.from_metadata(metadata(model))
    image = make_images(tmp_path / "images")[0]
    np.testing.assert_allclose(module.preprocess(image.read_bytes()), reference.load(image), rtol=0, atol=1e-6)
    with pytest.raises(UserInputError, match="max batch 8"):
        write_triton_repository(engine, tmp_path / "repo2", TritonOptions(backend="tensorrt", max_batch=16,
                                                                          preferred_batch="16"))
