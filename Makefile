# `make demo` and `make test` bootstrap .venv themselves; nothing needs installing by hand.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast bench clean real-kitti tissue

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

# Issue 20 end to end for one seed (TISSUE_SEEDS): render the SCARED-like tissue world, train the depth-only
# baseline and SemHint (600 steps each), score them against a constant depth, then track the held-out
# sequence with their depth beside exact depth and zero motion; records docs/lab/tissue_make*.md. CPU: ~30 min
TISSUE_SEEDS ?= 0
TISSUE_OUT ?= runs/tissue
TISSUE_STEPS ?= 600
tissue: $(STAMP)
	$(BIN)/python experiments/run_semhint.py --world tissue --preset scared --out $(TISSUE_OUT) --steps $(TISSUE_STEPS) \
		--labels corrupt0.5 --jobs 2 --seeds $(TISSUE_SEEDS) --configs synth_tissue_scared_kinematics semhint_synth_tissue_scared_kinematics \
		--key tissue_make$(TISSUE_KEY_SUFFIX) --title 'make tissue: baseline and SemHint on the SCARED-like tissue world'
	$(BIN)/python experiments/tracking.py --data $(TISSUE_OUT)/tissue --split test --noise-draws 1 --key tissue_make_tracking$(TISSUE_KEY_SUFFIX) \
		--title 'make tissue: tracking the held-out sequence with trained depth' \
		--baseline $(foreach s,$(TISSUE_SEEDS),$(TISSUE_OUT)/runs/synth_tissue_scared_kinematics/seed$(s)/checkpoints/last.ckpt) \
		--semhint $(foreach s,$(TISSUE_SEEDS),$(TISSUE_OUT)/runs/semhint_synth_tissue_scared_kinematics-corrupt0.5/seed$(s)/checkpoints/last.ckpt)
