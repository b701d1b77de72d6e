# Two entry points: `make test` and `make demo`. Both build .venv on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Pinned torch (a CPU build on local disk on the project machines); override with TORCH=...
TORCH  ?= torch==2.13.0
# A local corpus for `make demo DATA=...` (a file or directory, as `prepare --input` takes);
# empty means the tiny-shakespeare copy shipped inside the package: no network needed.
DATA   ?=

.PHONY: install test lint demo clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch first and pinned, so the range in pyproject.toml is already met and pip fetches nothing big.
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install --disable-pip-version-check -q "$(TORCH)"
	$(BIN)/pip install --disable-pip-version-check -q -e ".[dev]"
	touch $@

lint: install
	$(BIN)/ruff check .

test: lint
	$(BIN)/python -m pytest -q

demo: install
ifeq ($(strip $(DATA)),)
	$(BIN)/gptcli prepare --dataset shakespeare --tokenizer char --out data/demo --force
else
	$(BIN)/gptcli prepare --input "$(DATA)" --tokenizer char --out data/demo --force
endif
	$(BIN)/gptcli train --config configs/demo.yaml --force
	$(BIN)/gptcli sample --checkpoint out/demo --prompt "ROMEO:" --max-new-tokens 300

clean:
	rm -rf $(VENV) out .pytest_cache .ruff_cache
