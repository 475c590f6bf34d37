# `make demo` and `make test` bootstrap .venv themselves; nothing needs installing by hand.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast bench clean real-kitti

$(STAMP): pyproject.toml constraints.txt
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found (set PYTHON=python3.x)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# constraints.txt pins the CPU build of torch in the same resolve, so that nothing pulls a CUDA build
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[test,onnx,effnet,video]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/semhint demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_step.py

clean:
	rm -rf $(VENV) .pytest_cache

# SemHint vs baseline on real KITTI frames with labels from a CamVid labeler (docs/RESULTS.md); CPU: ~1 h for 5 seeds
SEEDS ?= 0 1 2 3 4
real-kitti: $(STAMP)
	$(BIN)/python experiments/real_kitti.py --out runs/real_kitti --seeds $(SEEDS)
