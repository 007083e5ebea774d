# Two commands do everything: `make demo` (the main job) and `make test`.
# Both create .venv and install what they need on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
OUT := outputs
ASSETS := emo/assets

.PHONY: demo demo-model test setup clean

$(VENV)/.installed: requirements.txt requirements-cli.txt requirements-test.txt .ci/constraints.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and pinned: an unpinned torch would pull a multi-GB CUDA build on CPU machines.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -c .ci/constraints.txt -r requirements.txt -r requirements-cli.txt -r requirements-test.txt
	# The `emo` command (.venv/bin/emo, from any folder): this repository's emo/, editable, no new packages.
	$(PY) -m pip install -q --no-deps -e .
	touch $@

setup: $(VENV)/.installed

# The bundled demo model (emo/assets/emo-demo.safetensors, synthetic faces only) on the bundled
# sample portrait and voice of a held-out synthetic talker; no --checkpoint: generate's default.
demo: $(VENV)/.installed
	mkdir -p $(OUT)
	$(PY) -m emo generate --image $(ASSETS)/sample_portrait.png --mask $(ASSETS)/sample_portrait_mask.png \
		--audio $(ASSETS)/sample_voice.wav --out $(OUT)/demo.mp4

# Rebuild the demo model from nothing (synthetic data -> prepare -> stages vae, 1, 2, 3 -> evaluate).
demo-model: $(VENV)/.installed
	PYTHON=$(PY) scripts/train_demo_model.sh

test: $(VENV)/.installed
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) $(OUT)
