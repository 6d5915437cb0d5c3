# sepcluster: `make test` and `make demo` install whatever is missing, then run.
SHELL := /bin/bash
PY_SYSTEM ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
LOCK := requirements.lock
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# g++ and libsox-dev build soxbindings (scaper's SoX bindings: no wheel for Python 3.11); chromium renders
# the HTML report in a test (headless), so the images (docker/Dockerfile) take APT_PACKAGES without it
APT_PACKAGES := ffmpeg sox libsox-dev libsox-fmt-all g++
APT_TEST_PACKAGES := chromium
# torch: the version is pinned in $(LOCK); TORCH picks the build. Default: cuda where nvidia-smi
# answers (the PyPI wheel, a CUDA build), else cpu (the CPU wheel from $(TORCH_CPU_INDEX), or the
# CPU wheel already lying in one of pip's find-links folders, as on the machines this repo is built on).
TORCH_VERSION := $(shell sed -n 's/^torch==\([^ ]*\).*/\1/p' $(LOCK))
TORCH ?= $(shell nvidia-smi -L >/dev/null 2>&1 && echo cuda || echo cpu)
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
PIP_FIND_LINKS_DIRS = $(shell $(PY_SYSTEM) -m pip config list 2>/dev/null | sed -n "s/^.*find-links='\(.*\)'$$/\1/p")
TORCH_LOCAL_CPU_WHEEL = $(firstword $(wildcard $(addsuffix /torch-$(TORCH_VERSION)+cpu-*.whl,$(PIP_FIND_LINKS_DIRS))))
STAMP := $(VENV)/.sepcluster-installed-$(TORCH)
# test-only oracles installed without their dependencies (their own pins pull torchaudio or another
# torch; what they import is in the test extra): see tests/oracles.py
TEST_NO_DEPS := openunmix==1.3.0 msst==0.1.0
export MLFLOW_DISABLE_TELEMETRY := true
export RAY_USAGE_STATS_ENABLED := 0

.PHONY: install install-torch lock system-deps test test-fast demo bench cluster-up cluster-down mlflow-server mlflow-server-down s3-server s3-server-down clean help

help:
	@echo "make install [TORCH=cpu|cuda]   system packages, .venv, torch's CPU or CUDA wheel, the project (locked)"
	@echo "make lock      rewrite $(LOCK) from .venv (run after make test passed)"
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
	command -v g++ >/dev/null || missing="$$missing g++"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(APT_PACKAGES) $(APT_TEST_PACKAGES); \
	fi

$(STAMP): pyproject.toml $(LOCK) constraints.txt
	@$(MAKE) --no-print-directory system-deps
	@[ -x $(PY) ] || $(PY_SYSTEM) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	@$(MAKE) --no-print-directory install-torch
	$(PIP) install -q -c $(LOCK) -e ".[test]"
	$(PIP) install -q --no-deps -c $(LOCK) $(TEST_NO_DEPS)
	@rm -f $(VENV)/.sepcluster-installed*
	@touch $(STAMP)

install: $(STAMP)

# torch $(TORCH_VERSION), the build TORCH names; a build of the other kind is replaced.
install-torch:
	@case "$(TORCH)" in cpu|cuda) ;; *) echo "TORCH must be cpu or cuda, not '$(TORCH)'" >&2; exit 2;; esac
	@[ -n "$(TORCH_VERSION)" ] || { echo "$(LOCK) pins no torch version" >&2; exit 2; }
	@[ -x $(PY) ] || $(PY_SYSTEM) -m venv $(VENV)
	@have=$$($(PY) -c 'import importlib.metadata as m; print(m.version("torch"))' 2>/dev/null || true); \
	case "$(TORCH):$$have" in \
	  cpu:$(TORCH_VERSION)+cpu|cuda:$(TORCH_VERSION)|cuda:$(TORCH_VERSION)+cu*) \
	    echo "torch $$have already installed ($(TORCH))"; exit 0;; \
	esac; \
	if [ -n "$$have" ]; then echo "replacing torch $$have"; $(PIP) uninstall -q -y torch; fi; \
	if [ "$(TORCH)" = cuda ]; then \
	  cmd="$(PIP) install -q -c $(LOCK) torch==$(TORCH_VERSION),!=$(TORCH_VERSION)+cpu"; \
	elif [ -n "$(TORCH_LOCAL_CPU_WHEEL)" ]; then \
	  cmd="$(PIP) install -q -c $(LOCK) torch==$(TORCH_VERSION)"; \
	else \
	  cmd="$(PIP) install -q -c $(LOCK) --extra-index-url $(TORCH_CPU_INDEX) torch==$(TORCH_VERSION)+cpu"; \
	fi; \
	echo "$$cmd"; $$cmd

# The lock from what .venv holds now (pyproject's dependencies and test extra, and $(TEST_NO_DEPS)):
# the versions the last `make test` passed with. To move a version: pip install it into .venv, run
# make test, then make lock.
lock: install
	$(PY) docker/lock.py --no-deps-roots $(TEST_NO_DEPS) > $(LOCK).new
	mv $(LOCK).new $(LOCK)

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
