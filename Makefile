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

.PHONY: install demo test test-fast bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet --disable-pip-version-check $(TORCH)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
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

test: $(STAMP)
	$(BIN)/python -m pytest -q -ra

# Skips the full-size release-variant exports (minutes on 2 cores).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -ra -m "not slow"

bench: $(STAMP)
	$(BIN)/python benchmarks/export_speed.py

clean:
	rm -rf $(OUT) .pytest_cache
