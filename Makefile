# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
OUT    := out
SAMPLE := samples/glnet_digits.pth
VAL    := samples/digits/val
# CPU build from the local wheel store; an unpinned torch would pull multi-GB CUDA wheels.
TORCH  := torch==2.13.0

# TensorRT's Python bindings (about 1.3 MB each) for tests/tensorrt/test_api_names.py, which reads the
# names they define without importing them; fetched once, and skipped by the tests when offline.
TRT_BINDINGS := .cache/trt-bindings
TRT_BINDINGS_VERSIONS := 10.13.3.9 11.4.0.106
# Tests run on one pytest-xdist worker per core (at most 4: the release sweeps take GBs each); the
# session artifacts are built once and shared by the workers (tests/tiny_artifacts.py: built_once).
# PYTEST_JOBS=0 runs serially.
PYTEST_JOBS ?= auto
PYTEST_PARALLEL := $(if $(filter 0,$(PYTEST_JOBS)),,-n $(PYTEST_JOBS) --maxprocesses=4)

.PHONY: install demo test test-fast test-all-releases lint bench clean trt-bindings

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet --disable-pip-version-check $(TORCH)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev,serve]'
	# PyTriton (its wheel ships a real tritonserver) pins numpy<2, which the rest of the stack has
	# outgrown: its other dependencies came with the `serve` extra above; the wheel comes last, without
	# its own (--no-deps), and pip is told not to print that known pin as an ERROR (--no-warn-conflicts).
	# `serve` gives Triton's Python stub its own numpy<2 (glmix_deploy/serve/environment.py). Without
	# it, serving tests skip.
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps --no-warn-conflicts 'nvidia-pytriton>=0.5' \
		|| echo "note: nvidia-pytriton not installed; the real-Triton tests will skip"
	# ExecuTorch (the `executorch` extra; --fmt executorch and its tests): the wheel and torchao without
	# their dependency list (coremltools, hydra, pandas, tokenizers... unused by the XNNPACK route), plus
	# the two modules its exporter imports. torch and numpy stay as they are. Without it, its tests skip.
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps executorch==1.5.1 torchao==0.18.0 \
		&& $(BIN)/pip install --quiet --disable-pip-version-check --no-warn-conflicts ruamel.yaml tabulate \
		|| echo "note: executorch not installed; the ExecuTorch tests will skip"
	touch $(STAMP)

install: $(STAMP)

# The main job on the bundled sample: inspect, export a dynamic-shape ONNX (verified at four shapes),
# re-verify it on the held-out digits, and print PyTorch vs ONNX accuracy.
demo: $(STAMP)
	@mkdir -p $(OUT)
	$(BIN)/glmix-deploy inspect --ckpt $(SAMPLE)
	$(BIN)/glmix-deploy export --ckpt $(SAMPLE) --fmt onnx --dynamic all --out $(OUT)/glnet_digits.onnx
	$(BIN)/glmix-deploy verify --ckpt $(SAMPLE) --model $(OUT)/glnet_digits.onnx --images $(VAL) --junit $(OUT)/verify.xml
	$(BIN)/glmix-deploy eval --ckpt $(SAMPLE) --images $(VAL) --model $(OUT)/glnet_digits.onnx

trt-bindings: $(STAMP)
	@mkdir -p $(TRT_BINDINGS)
	@for v in $(TRT_BINDINGS_VERSIONS); do \
		ls $(TRT_BINDINGS)/tensorrt_cu12_bindings-$$v-*.whl >/dev/null 2>&1 || \
		$(BIN)/pip download --quiet --disable-pip-version-check --no-deps -d $(TRT_BINDINGS) \
			tensorrt-cu12-bindings==$$v || echo "note: tensorrt-cu12-bindings==$$v not fetched; its API test will skip"; \
	done

test: $(STAMP) trt-bindings
	$(BIN)/python -m pytest -q -ra --durations=15 $(PYTEST_PARALLEL)

# The release sweeps at full depth: make test sweeps every release's layout with one or two
# blocks per stage (tests/factory.py: sweep_layout).
test-all-releases: $(STAMP) trt-bindings
	GLMIX_ALL_RELEASES=1 $(BIN)/python -m pytest -q -ra --durations=15 $(PYTEST_PARALLEL)

# The inner loop: no sweeps or full-size runs (slow), no real Triton servers (serving), no CLI runs
# in a fresh Python process (cli), no ExecuTorch lowering (executorch).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -ra -m "not slow and not serving and not cli and not executorch" --durations=10 \
		$(PYTEST_PARALLEL)

lint: $(STAMP)
	$(BIN)/ruff check glmix_deploy tests benchmarks samples

bench: $(STAMP)
	$(BIN)/python benchmarks/export_speed.py

clean:
	rm -rf $(OUT) .pytest_cache
