# The two entry points of the README. Both set everything up first (from requirements.lock).
VENV ?= .venv

.PHONY: setup demo test test-fast test-latest lock lint bench

setup:
	@VENV=$(VENV) bash scripts/setup.sh

demo: setup
	$(VENV)/bin/resweep demo

# What CI runs (.ci/run): the whole suite, Ray tests included.
test: setup
	$(VENV)/bin/python -m pytest -q -p no:cacheprovider

# The edit-test loop: everything that does not start Ray (tests marked `ray`, or using the
# `ray_local` fixture, which marks them; see tests/conftest.py).
test-fast: setup
	RESWEEP_TEST_FAST=1 $(VENV)/bin/python -m pytest -q -p no:cacheprovider -m "not ray"

# Drift check: the newest releases pyproject.toml allows, in .venv-latest, against the suite
# (LATEST_PYTEST_ARGS="tests/test_x.py" for a subset); prints what differs from the lock.
test-latest:
	bash scripts/latest.sh

# Refresh requirements.lock on purpose (then run `make test` and commit both files).
lock:
	bash scripts/lock.sh

lint: setup
	$(VENV)/bin/ruff check resweep tests benchmarks

bench: setup
	for b in benchmarks/bench_*.py; do echo "== $$b"; $(VENV)/bin/python $$b || exit 1; done
