"""`ServedModel` without Triton: requests batched together come back split, equal to the engine run
alone; chunks within the artifact's batch range; batch-1 artifacts one by one; images preprocessed
like eval; options refused before anything starts."""

from __future__ import annotations

import numpy as np
import pytest

from glmix_deploy.errors import UserInputError
from glmix_deploy.serve import LABEL_OUTPUT, ServeOptions, open_served_model
from tests.serve.helpers import assert_fp32_equal


def _rows(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, 64, 64)).astype(np.float32)


def test_grouped_requests_are_answered_each_as_if_alone(tiny_onnx):
    served = open_served_model(tiny_onnx, threads=1)
    try:
        assert served.engine_batch == 4  # the export's declared range: 7 rows run as 4 + 3
        requests = [{"images": _rows(n, seed)} for n, seed in ((3, 0), (1, 1), (3, 2))]
        responses = served.answer(requests)
        assert [len(r["logits"]) for r in responses] == [3, 1, 3]
        for request, response in zip(requests, responses):
            assert_fp32_equal(response["logits"], served.engine.infer(request)["logits"])
    finally:
        served.close()


def test_a_static_batch_1_artifact_runs_row_by_row(tiny_onnx_static):
    served = open_served_model(tiny_onnx_static, threads=1)
    try:
        assert served.engine_batch == 1
        x = _rows(3, 3)
        got = served.answer([{"images": x}])[0]["logits"]
        want = np.concatenate([served.engine.infer({"images": x[i:i + 1]})["logits"] for i in range(3)])
        assert_fp32_equal(got, want)
    finally:
        served.close()


def test_images_get_evals_preprocessing_and_labels_name_the_top_class(tiny_onnx, tmp_path, image_folder):
    import shutil

    from glmix_deploy.data.preprocess import Preprocessing

    artifact = tmp_path / "m.onnx"
    shutil.copyfile(tiny_onnx, artifact)
    (tmp_path / "labels.txt").write_text("".join(f"c{i}\n" for i in range(10)))
    served = open_served_model(artifact, threads=1, with_preprocess=True)
    try:
        files = sorted(image_folder.glob("*/*.png"))[:2]
        items = np.array([[f.read_bytes()] for f in files], dtype=object)
        out = served.answer_images([{"image_bytes": items}])[0]
        pre = Preprocessing.from_metadata(served.engine.metadata)
        want = served.engine.infer({"images": np.stack([pre.load(f) for f in files])})["logits"]
        assert_fp32_equal(out["logits"], want)
        assert [row[0].decode() for row in out[LABEL_OUTPUT]] == [f"c{i}" for i in want.argmax(1)]
        with pytest.raises(UserInputError, match="item 1: not a decodable image"):
            served.decode(np.array([[items[0, 0]], [b"junk"]], dtype=object))
    finally:
        served.close()


def test_labels_with_the_wrong_line_count_are_ignored_with_a_note(tiny_onnx, tmp_path):
    import shutil

    artifact = tmp_path / "m.onnx"
    shutil.copyfile(tiny_onnx, artifact)
    (tmp_path / "labels.txt").write_text("a\nb\n")
    served = open_served_model(artifact, threads=1)
    served.close()
    assert served.labels is None and "2 lines for 10 classes" in served.notes[0]


@pytest.mark.parametrize("options, message", [
    (ServeOptions(host="0.0.0.0.1"), "`host` must be an IP address"),
    (ServeOptions(http_port=0), "`http_port` must be a port number"),
    (ServeOptions(grpc_port=8000), "must differ"),
    (ServeOptions(name="bad name"), "not a usable Triton model name"),
    (ServeOptions(max_batch=0), "`max_batch` must be an integer >= 1"),
])
def test_bad_options_are_refused(options, message):
    with pytest.raises(UserInputError, match=message):
        options.validate()


def test_default_binds_loopback_and_images_use_the_ensemble_name():
    options = ServeOptions(with_preprocess=True).validate()
    assert options.host == "127.0.0.1"
    assert options.model_names == ["glnet", "glnet_ensemble"]
    assert options.endpoints["grpc"] == "127.0.0.1:8001"


def test_stub_environment_puts_this_pythons_libpython_first_and_numpy_below_2():
    pytest.importorskip("pytriton.triton", reason="nvidia-pytriton is not installed")
    import subprocess
    import sysconfig

    from glmix_deploy.serve.environment import server_environment

    env = server_environment({"PATH": "/usr/bin:/bin"})
    assert env["LD_LIBRARY_PATH"].split(":")[0] == sysconfig.get_config_var("LIBDIR")
    python3 = env["PATH"].split(":")[0] + "/python3"
    found = subprocess.run([python3, "-c", "import numpy, zmq; print(numpy.__version__)"], capture_output=True,
                           text=True, env={"PATH": env["PATH"]}, timeout=60)
    assert found.returncode == 0, found.stderr
    assert int(found.stdout.split(".")[0]) < 2  # what the stub's pybind11 was built for


def test_preprocessing_an_artifact_does_not_record_is_a_note(tiny_onnx, tmp_path):
    """An artifact lacking crop_pct/interpolation (an older export) still serves, with the defaults it
    was given named in the notes; a complete artifact has no such note."""
    import onnx

    served = open_served_model(tiny_onnx, threads=1)
    try:
        assert not [n for n in served.notes if "does not record" in n]
        complete = served.preprocessing
    finally:
        served.close()
    model = onnx.load(str(tiny_onnx))
    kept = [p for p in model.metadata_props if p.key != "crop_pct"]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    onnx.save(model, str(tmp_path / "old.onnx"))
    served = open_served_model(tmp_path / "old.onnx", threads=1)
    try:
        assert served.notes == [f"{tmp_path / 'old.onnx'} does not record crop_pct; assumed 0.875"]
        assert served.preprocessing.img_size == complete.img_size and served.preprocessing.crop_pct == 0.875
        assert served.describe()["notes"] == served.notes
    finally:
        served.close()
