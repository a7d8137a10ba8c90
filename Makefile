# Plain entry points; each target is what the README says, spelled out.
PY ?= python3.11
VENV ?= .venv

.PHONY: run test lint format lock ci clean

$(VENV)/bin/python:
	$(PY) -m venv $(VENV)

run: $(VENV)/bin/python
	$(VENV)/bin/pip install -r requirements.lock -e .
	$(VENV)/bin/skydeck serve

test: $(VENV)/bin/python
	$(VENV)/bin/pip install -r requirements-dev.lock -e .
	$(VENV)/bin/pytest

lint:
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format:
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# Re-resolve the lock files from pyproject.toml in throwaway virtualenvs.
lock:
	rm -rf /tmp/skydeck-lock && $(PY) -m venv /tmp/skydeck-lock
	/tmp/skydeck-lock/bin/pip install -q .
	{ echo "# Exact runtime versions SkyDeck is tested with (pip install -r requirements.lock -e .)."; \
	  echo "# Regenerate with: make lock"; \
	  /tmp/skydeck-lock/bin/pip freeze --exclude-editable | grep -v '^skydeck'; } > requirements.lock
	/tmp/skydeck-lock/bin/pip install -q ".[dev]"
	{ echo "# Exact runtime + development versions (pip install -r requirements-dev.lock -e .)."; \
	  echo "# Regenerate with: make lock"; \
	  /tmp/skydeck-lock/bin/pip freeze --exclude-editable | grep -v '^skydeck'; } > requirements-dev.lock

ci:
	bash .ci/run

clean:
	rm -rf $(VENV) staticfiles .pytest_cache
