# The two commands of the README: `make demo` (the main job) and `make test`.
# Both build .venv from nothing with the pinned versions in requirements/lock.txt.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
EXTRAS ?= all,dev

.PHONY: demo test lint bench audit lock schema reference clean images

$(STAMP): pyproject.toml requirements/lock.txt
	@echo "==> creating $(VENV) with $(PYTHON) and the pinned dependencies (first run only)"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check \
		--constraint requirements/lock.txt --editable ".[$(EXTRAS)]"
	@touch $(STAMP)

demo: $(STAMP)
	@$(BIN)/python scripts/demo.py

# Real PostgreSQL and Redis on loopback for the run (installed from Debian's packages when missing).
test: $(STAMP)
	$(BIN)/python scripts/test_services.py -- $(BIN)/python -m pytest -n 2 --dist loadfile -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check compiler tests bench scripts
	$(BIN)/ruff format --check compiler tests bench scripts
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python bench/startup.py
	$(BIN)/python bench/validate_scale.py
	$(BIN)/python bench/render_scale.py
	$(BIN)/python bench/policy_engines.py
	$(BIN)/python bench/plan_scale.py
	$(BIN)/python bench/state_backends.py
	$(BIN)/python bench/serving.py
	$(BIN)/python bench/gpu_serving.py

# The runtime and serving images (docker/), tagged by content: an unchanged build is a no-op.
# PUSH=registry.example.com/ml pushes and records them; BASE_IMAGE=... replaces python:3.11-slim.
images: $(STAMP)
	$(BIN)/mlspec image build $(if $(PUSH),--push $(PUSH)) $(if $(BASE_IMAGE),--base-image $(BASE_IMAGE))

# A vulnerability report of the pinned dependencies (pip-audit); a report, not a gate.
audit: $(STAMP)
	$(BIN)/python scripts/audit_dependencies.py -r requirements/lock.txt

schema: $(STAMP)
	$(BIN)/mlspec schema -o schema

# The field reference, generated from the spec models (a test keeps it current).
reference: $(STAMP)
	$(BIN)/python -m mlspec.spec.reference docs/reference.md

# Re-resolve every extra together and record the exact versions.
lock:
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip install --quiet --editable ".[all,dev]"
	{ echo "# Exact versions the test suite ran on: 'make lock' regenerates this file from a joint install."; \
	  echo "# Used as a pip constraints file, so installs of any extra get these versions."; \
	  .venv-lock/bin/python -m pip freeze --exclude-editable | sed 's/+cpu$$//' | grep -v '^-e'; } > requirements/lock.txt
	rm -rf .venv-lock

clean:
	rm -rf $(VENV) .mlspec data .cache .pytest_cache .mypy_cache .ruff_cache
