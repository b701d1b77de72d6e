# Entry points: `make test` (what CI runs: lint, every test, the docs site built --strict),
# `make check` (the fast loop), `make demo` and `make docs`; each
# builds .venv on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Pinned torch (a CPU build on local disk on the project machines); override with TORCH=...
TORCH  ?= torch==2.13.0
# A local corpus for `make demo DATA=...` (a file or directory, as `prepare --input` takes);
# empty means the tiny-shakespeare copy shipped inside the package: no network needed.
DATA   ?=

.PHONY: install check test test-isa test-exhaustive soak lint demo docs clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch first and pinned, so the range in pyproject.toml is already met and pip fetches nothing big.
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install --disable-pip-version-check -q "$(TORCH)"
	$(BIN)/pip install --disable-pip-version-check -q -e ".[dev,docs]"
	touch $@

lint: install
	$(BIN)/ruff check .

# The edit-test loop: lint and the fast tests (under 90 s on 2 cores); `make test` runs all.
# Two workers: the tests run torch on one thread each (tests/conftest.py), so one process
# leaves a core idle.
check: lint
	$(BIN)/python -m pytest -q -x -n 2 -m "not slow"

# Everything, on two workers too; then, in one process, the tests that count the gptcli
# trainings on the machine, which the other worker's trainings would change.
test: lint
	$(BIN)/python -m pytest -q -n 2 -m "not alone"
	$(BIN)/python -m pytest -q -m alone

# Release checks, not part of make test: every variant combination, not only the covering
# array's; the torchrun exit check repeated RUNS times.
test-exhaustive: install
	GPTCLI_EXHAUSTIVE=1 $(BIN)/python -m pytest -q -m exhaustive tests/model tests/test_generate.py

RUNS ?= 18
soak: install
	GPTCLI_SOAK_RUNS=$(RUNS) $(BIN)/python -m pytest -q -m soak

demo: install
ifeq ($(strip $(DATA)),)
	$(BIN)/gptcli prepare --dataset shakespeare --tokenizer char --out data/demo --force
else
	$(BIN)/gptcli prepare --input "$(DATA)" --tokenizer char --out data/demo --force
endif
	$(BIN)/gptcli train --config configs/demo.yaml --force
	$(BIN)/gptcli sample --checkpoint out/demo --prompt "ROMEO:" --max-new-tokens 300

# The documentation site, built as make test builds it (tests/test_site.py), into site/;
# `$(BIN)/mkdocs serve` to write it.
docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

clean:
	rm -rf $(VENV) out site .pytest_cache .ruff_cache

# The tests whose numbers depend on the CPU's kernels (sampling, generate, eval, casting for
# inference, training parity and resume), once per instruction-set level this machine has:
# oneDNN, MKL and ATen's own kernels capped as a lower CPU would run them (gptcli.cpu).
ISA_TESTS := tests/test_generate.py tests/model/test_decode.py tests/model/test_model.py \
	tests/test_evaluate.py tests/test_api.py tests/test_memory.py tests/test_cpu.py \
	tests/training/test_pinned_losses.py tests/training/test_train.py tests/training/test_precision.py

test-isa: install
	@for isa in $$($(BIN)/python -m gptcli.cpu); do \
	  case $$isa in AVX2) extra="ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2";; \
	    AVX512_CORE) extra="ATEN_CPU_CAPABILITY=avx512 MKL_ENABLE_INSTRUCTIONS=AVX512";; \
	    *) extra="";; esac; \
	  echo "== ONEDNN_MAX_CPU_ISA=$$isa $$extra"; \
	  env ONEDNN_MAX_CPU_ISA=$$isa $$extra $(BIN)/python -m pytest -q -p no:cacheprovider \
	    $(ISA_TESTS) || exit 1; \
	done
