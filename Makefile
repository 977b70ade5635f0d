# The two entry points of the README. Both set everything up first (from requirements.lock).
VENV ?= .venv

.PHONY: setup demo test test-all test-slow test-fast test-latest lock lint bench

setup:
	@VENV=$(VENV) bash scripts/setup.sh

demo: setup
	$(VENV)/bin/resweep demo

# What CI runs (.ci/run): every test but the long multi-process integration runs marked `slow`
# (clusters of isolated nodes, kill-and-resume over S3, autoscaling, ...: `make test-slow`).
test: setup
	$(VENV)/bin/python -m pytest -q -p no:cacheprovider -m "not slow"

# The long integration runs alone (44 minutes on this 2-core machine, partly loaded), and everything together.
test-slow: setup
	$(VENV)/bin/python -m pytest -q -p no:cacheprovider -m slow

test-all: setup
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
