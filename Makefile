# Two commands do everything: `make demo` (the main job) and `make test`.
# Both create .venv and install what they need on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
OUT := outputs
CHECKPOINT ?= $(OUT)/emo-tiny-random.safetensors

.PHONY: demo test setup clean

$(VENV)/.installed: requirements.txt requirements-test.txt .ci/constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and pinned: an unpinned torch would pull a multi-GB CUDA build on CPU machines.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -c .ci/constraints.txt -r requirements.txt -r requirements-test.txt
	touch $@

setup: $(VENV)/.installed

$(CHECKPOINT): | $(VENV)/.installed
	$(PY) -m emo new-checkpoint --preset tiny --out $(CHECKPOINT)

demo: $(VENV)/.installed $(CHECKPOINT)
	$(PY) examples/make_sample_inputs.py $(OUT)
	$(PY) -m emo generate --image $(OUT)/portrait.png --mask $(OUT)/portrait_mask.png \
		--audio $(OUT)/voice.wav --checkpoint $(CHECKPOINT) --out $(OUT)/demo.mp4

test: $(VENV)/.installed
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) $(OUT)
