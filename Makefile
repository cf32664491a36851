# The README's quick start: `make run` and `make test`, on a fresh machine, nothing before them.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run demo test test-postgres lint bench clean chromium

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/notifier serve

demo: $(STAMP)
	$(BIN)/notifier demo

test: $(STAMP) chromium
	$(BIN)/pytest -q
	$(MAKE) --no-print-directory lint

# The suite again on PostgreSQL: NOTIFIER_TEST_DATABASE_URL names a server database; each test
# gets a schema of its own there. .ci/run creates a throwaway database for it.
test-postgres: $(STAMP) chromium
	$(BIN)/pytest -q

# The console's browser test drives Debian's Chromium (tests/test_console_browser.py, which
# fails without it): installed here when missing, with sudo unless already root.
chromium:
	@test -x /usr/bin/chromium || { \
	  sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$sudo apt-get install -y chromium || { $$sudo apt-get update && $$sudo apt-get install -y chromium; }; }

# Every performance figure in one run (10-15 minutes; needs wrk and PostgreSQL on
# 127.0.0.1). `make bench QUICK=1` checks the benchmarks themselves in a couple of minutes.
bench: $(STAMP)
	command -v wrk >/dev/null || apt-get install -y wrk
	$(BIN)/python benchmarks/run_all.py $(if $(QUICK),--quick)

lint: $(STAMP)
	$(BIN)/ruff check notifier tests benchmarks
	$(BIN)/ruff format --check notifier tests benchmarks
	$(BIN)/mypy

clean:
	rm -rf $(VENV) notifier.db notifier.db-wal notifier.db-shm outbox
