# The everyday commands. `make run` and `make test` set up .venv on first use (and again only
# when pyproject.toml changes), so both work from a fresh clone.
PYTHON ?= python3
VENV   := .venv
BIN    := $(CURDIR)/$(VENV)/bin
STAMP  := $(VENV)/.installed

# Telemetry off (it fails noisily offline); Prefect keeps its state inside the project.
export PATH := $(BIN):$(PATH)
export PREFECT_HOME ?= $(CURDIR)/.prefect
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := true
export DVC_NO_ANALYTICS := 1
export GIT_PYTHON_REFRESH := quiet
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS ?= 120

# Team mode: while `make services-up` runs, its team.env points MLflow and Prefect clients at the
# shared servers (MLFLOW_TRACKING_URI, PREFECT_API_URL); `make services-down` removes it again.
-include .services/team.env
ifneq ($(MLFLOW_TRACKING_URI),)
export MLFLOW_TRACKING_URI
endif
ifneq ($(PREFECT_API_URL),)
export PREFECT_API_URL
endif

.PHONY: setup run test test-fast browser lint-imports repro ui prefect-up prefect-down services-up services-down services-status sweep clean-outputs help data-docs docs emoji-font

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

setup: $(STAMP)  ## create .venv and install genloop with its test tools (skipped when up to date)

run: $(STAMP)  ## run the whole loop (Prefect flow genloop-pipeline) on the bundled digits
	$(BIN)/genloop run

browser:  ## install Debian's chromium and chromium-driver (the explorer's browser tests) when chromedriver is missing
	@command -v chromedriver >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && \
	  { sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	    $$sudo apt-get install -y chromium chromium-driver || \
	    { $$sudo apt-get update && $$sudo apt-get install -y chromium chromium-driver; }; }; } || \
	  echo "note: chromium-driver not installed; the explorer's browser tests will skip"

test: $(STAMP) browser  ## run the whole test suite (integration tests included: about 10+ minutes on 2 cores)
	$(BIN)/python -m pytest

test-fast: $(STAMP)  ## the tests that start no server, Dask, DVC or browser and train nothing long (under 2 minutes)
	$(BIN)/python -m pytest -m "not integration"

lint-imports: $(STAMP)  ## check the import contracts in pyproject.toml (layers, no cycles, stages independent)
	$(BIN)/lint-imports

repro: $(STAMP)  ## recreate data/ if missing (dvc pull from the default remote, else collect), then `dvc repro`
	@test -f data/images.npy || $(BIN)/genloop collect
	$(BIN)/dvc repro

emoji-font:  ## install Debian's fonts-noto-color-emoji (SIL OFL 1.1), the font `genloop collect --source emoji` renders
	@test -f /usr/share/fonts/truetype/noto/NotoColorEmoji.ttf || \
	{ sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$sudo apt-get install -y fonts-noto-color-emoji || \
	  { $$sudo apt-get update && $$sudo apt-get install -y fonts-noto-color-emoji; }; }

data-docs: $(STAMP)  ## validate data/ (genloop clean): Data Docs, near-duplicates; reports/data_docs.png if Chromium is installed
	$(BIN)/genloop clean
	@page=$$(find reports/data_docs/validations -name '*.html' | head -n 1); \
	if command -v chromium >/dev/null 2>&1 && [ -n "$$page" ]; then \
	  chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1280,2400 \
	    --screenshot=$(CURDIR)/reports/data_docs.png "file://$(CURDIR)/$$page" >/dev/null 2>&1 \
	  && echo "screenshot: reports/data_docs.png"; \
	fi; echo "open reports/data_docs/index.html"

ui: $(STAMP)  ## open the MLflow UI on the project's store at http://127.0.0.1:5000 (team mode: print the server's URL)
	@if [ -n "$(MLFLOW_TRACKING_URI)" ]; then echo "team mode: the MLflow UI is the tracking server, $(MLFLOW_TRACKING_URI)"; exit 0; fi; \
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow/mlflow.db --host 127.0.0.1 --port 5000 --workers 1

prefect-up: $(STAMP)  ## start a local Prefect server (UI at :4200); serve genloop-pipeline, -sweep, -loop
	flows/prefect-local.sh up

prefect-down:  ## stop what prefect-up started
	flows/prefect-local.sh down

services-up: $(STAMP)  ## team mode: PostgreSQL + MLflow server + Prefect server in .services/ (installs PostgreSQL if missing)
	$(BIN)/genloop services up

services-down:  ## stop what services-up started (the data stays in .services/)
	$(BIN)/genloop services down

services-status:  ## is each team service running, where, healthy
	$(BIN)/genloop services status

docs: $(STAMP)  ## build the user docs (docs/, mkdocs.yml) into site/: offline, strict (a broken link fails)
	$(BIN)/mkdocs build --strict --site-dir site
	@echo "open site/index.html"

sweep: $(STAMP)  ## hyperparameter sweep (params.yaml `sweep`) on a local Dask cluster, after `make run`
	$(BIN)/genloop sweep

clean-outputs:  ## remove generated outputs (keeps data/, the MLflow store and .venv)
	rm -rf outputs models reports/*.json
