# sepcluster: `make test` and `make demo` install whatever is missing, then run.
SHELL := /bin/bash
PY_SYSTEM ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.sepcluster-installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_PACKAGES := ffmpeg sox libsox-dev libsox-fmt-all
export MLFLOW_DISABLE_TELEMETRY := true
export RAY_USAGE_STATS_ENABLED := 0

.PHONY: install system-deps test test-fast demo bench cluster-up cluster-down mlflow-server mlflow-server-down s3-server s3-server-down clean help

help:
	@echo "make test      install what is missing, run the test suite"
	@echo "make demo      install what is missing, run the whole pipeline on the embedded default"
	@echo "make bench     run the benchmarks in bench/ (reference side by side, ratios)"
	@echo "make cluster-up / cluster-down     a local 2-node Ray cluster on 127.0.0.1"
	@echo "make mlflow-server / s3-server     a local MLflow server / SeaweedFS S3 server"

system-deps:
	@missing=""; \
	command -v ffmpeg >/dev/null || missing="$$missing ffmpeg"; \
	command -v sox >/dev/null || missing="$$missing sox libsox-fmt-all"; \
	dpkg -s libsox-dev >/dev/null 2>&1 || missing="$$missing libsox-dev"; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(APT_PACKAGES); \
	fi

$(STAMP): pyproject.toml constraints.txt
	@$(MAKE) --no-print-directory system-deps
	@[ -x $(PY) ] || $(PY_SYSTEM) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -c constraints.txt -e ".[test]"
	# test-only oracle; its own pins would pull torchaudio, so no deps (see tests/oracles.py)
	$(PIP) install -q --no-deps openunmix==1.3.0
	@touch $(STAMP)

install: $(STAMP)

test: install
	$(VENV)/bin/pytest -q -p no:cacheprovider tests

test-fast: install
	$(VENV)/bin/pytest -q -p no:cacheprovider -m "not slow" tests

demo: install
	$(PY) jobs/pipeline.py --config cluster/demo.yaml

bench: install
	for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

cluster-up: install
	$(PY) -m sepcluster.localcluster up

cluster-down:
	$(PY) -m sepcluster.localcluster down

mlflow-server: install
	$(PY) -m sepcluster.localcluster mlflow-up

mlflow-server-down:
	$(PY) -m sepcluster.localcluster mlflow-down

s3-server: install
	$(PY) -m sepcluster.localcluster s3-up

s3-server-down:
	$(PY) -m sepcluster.localcluster s3-down

clean:
	rm -rf demo-out .pytest_cache
