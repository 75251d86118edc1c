# Whisper Streaming — set-up, run, test.
#   make run    install what running needs (the main group only), then start the whole service
#   make test   install the dev group on top (pytest, mypy, Playwright, the deploy linters), then
#               run the whole test suite
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3)
TOOLS := .tools
POETRY := $(TOOLS)/poetry/bin/poetry
# Two stamps: the run environment (`poetry sync --only main`: what `make run` needs, nothing
# more) and the test environment (`--with dev,load`: the load group too, so the Locust test of
# the predecessor's scenario runs). `poetry sync` removes what the chosen groups do not list, so
# syncing the main group alone drops the dev stamp, and a dev sync (a superset) refreshes both.
MAIN_STAMP := .venv/.installed-main
DEV_STAMP := .venv/.installed-dev

# Poetry's built-in PyPI source needs a per-version JSON API that some registries and mirrors do
# not serve; the pypi-mirror plugin makes it use the simple index that pip itself uses.
export POETRY_PYPI_MIRROR_URL ?= $(shell $(PYTHON) -c 'from pip._internal.models.index import PyPI; print(PyPI.simple_url)' 2>/dev/null || echo https://pypi.org/simple)
export POETRY_VIRTUALENVS_IN_PROJECT := true
export POETRY_NO_INTERACTION := 1

.PHONY: help install dev-install test-deps run test test-fast lint bench clean redis-server soak deploy-tools autoscale-demo

help:
	@echo "make run   - start the service on http://127.0.0.1:8000 (HOST/PORT override)"
	@echo "make test  - run the test suite"
	@echo "make lint  - ruff and mypy"
	@echo "make bench - benchmarks (writes docs/benchmarks.md figures)"
	@echo "make bench-languages - other languages, detection, translation (docs/benchmarks.md)"
	@echo "make autoscale-demo - KEDA's stream-lag scaling applied to local ASR workers during a burst"

$(POETRY):
	$(PYTHON) -m venv $(TOOLS)/poetry
	$(TOOLS)/poetry/bin/pip install --quiet --upgrade pip
	$(TOOLS)/poetry/bin/pip install --quiet "poetry>=2.1,<2.6" "poetry-plugin-pypi-mirror>=0.6"

redis-server:
	@command -v redis-server >/dev/null 2>&1 || bash scripts/install-redis.sh

# Debian's chromium, for the browser end-to-end test (tests/e2e/test_web.py); nothing is downloaded
# from elsewhere (Playwright drives it with executable_path, `playwright install` is never run).
.PHONY: chromium loadtest
chromium:
	@command -v chromium >/dev/null 2>&1 || bash scripts/install-chromium.sh

$(MAIN_STAMP): $(POETRY) pyproject.toml poetry.lock
	$(POETRY) env use $(PYTHON) >/dev/null
	$(POETRY) sync --only main
	@rm -f $(DEV_STAMP)
	@touch $(MAIN_STAMP)

$(DEV_STAMP): $(POETRY) pyproject.toml poetry.lock
	$(POETRY) env use $(PYTHON) >/dev/null
	$(POETRY) sync --with dev,load
	@touch $(DEV_STAMP) $(MAIN_STAMP)

deploy-tools:
	@bash scripts/install-deploy-tools.sh

# what running the service needs
install: $(MAIN_STAMP) redis-server

# what the test suite, the benchmarks and the soak test need on top: the dev group, the browser
# and the offline deployment checkers
dev-install: $(DEV_STAMP) redis-server
test-deps: dev-install chromium deploy-tools

autoscale-demo: install
	$(POETRY) run python deploy/autoscale_demo.py

run: install
	$(POETRY) run whisper-streaming up

test: test-deps
	$(POETRY) run ruff check .
	$(POETRY) run mypy
	$(POETRY) run pytest

test-fast: test-deps
	$(POETRY) run pytest -m "not e2e"

lint: dev-install
	$(POETRY) run ruff check .
	$(POETRY) run ruff format --check .
	$(POETRY) run mypy

SOAK_ARGS ?= --sessions 4 --minutes 3 --kill-every 20
soak: dev-install
	$(POETRY) run python -m whisper_streaming.soak $(SOAK_ARGS)

# Locust against a running service (make run): the predecessor's scenario plus end-of-speech-to-
# final latency. LOAD_HOST, USERS, RUN_TIME; LOAD_AUDIO_DIR etc. as in locustfile.py.
LOAD_HOST ?= ws://127.0.0.1:8000
USERS ?= 10
RUN_TIME ?= 2m
loadtest: dev-install
	$(POETRY) install --with dev,load
	$(POETRY) run locust -f locustfile.py --host $(LOAD_HOST) --headless --users $(USERS) \
		--spawn-rate 2 --run-time $(RUN_TIME) --stop-timeout 60

clean:
	rm -rf .venv $(TOOLS) .pytest_cache .mypy_cache .ruff_cache

# Benchmarks (not tests: speed is measured, never asserted). Results: bench-results/*.json and the
# marked sections of docs/benchmarks.md. WHISPER_CORPUS overrides ../shared/corpus.
.PHONY: bench-latency bench-tuning bench-languages
bench: dev-install
	$(POETRY) run python -m bench

bench-latency: dev-install
	$(POETRY) run python -m bench.latency

bench-tuning: dev-install
	$(POETRY) run python -m bench.tuning

# Other languages (issue 15): ../shared/corpus/other-languages offline vs the pipeline with the
# bundled multilingual base; BENCH_ARGS="--env ASR_BEAM_SIZE=5" for the issue's reference beam.
bench-languages: dev-install
	$(POETRY) run python -m bench.languages $(BENCH_ARGS)

# VAD quality (docs/vad.md): detection error against ../shared/corpus/vad; BACKENDS="silero pyannote"
# with the pyannote extra installed and PYANNOTE_MODEL / PYANNOTE_AUTH_TOKEN set.
.PHONY: bench-vad
BACKENDS ?= silero
bench-vad: dev-install
	$(POETRY) run python -m bench.vad_quality $(foreach b,$(BACKENDS),--backend $(b))
