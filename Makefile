# Phoenix vLLM spec suite. Quick start: `make specs` (build + verify on the embedded default), `make test`.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
PYTEST  := $(BIN)/python -m pytest
OUT     := reports/out
ALLURE  := reports/allure-results
SPECS_ARGS ?=
## Host prerequisites (provisioners/steps/host.py): checked, installed when missing and root; else one line, exit 4.
## System python3, before the venv exists (the venv itself needs python3-venv).
HOST    := $(PY) -m provisioners.steps.host

.PHONY: venv specs specs-lxc audit lint test catalog report gate clean source-build-cpu device-bundle

# an existing venv (or a link to one) is updated in place, not created again
$(BIN)/python: requirements.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	touch $(BIN)/python

venv: $(BIN)/python

## The main job: build and verify on the embedded default (local target, cpu profile, tiny model, real vLLM).
specs:
	$(HOST) --for local
	@$(MAKE) --no-print-directory venv
	$(PYTEST) specs/ -p no:randomly --alluredir=$(ALLURE) --junitxml=$(OUT)/junit-specs.xml $(SPECS_ARGS)

WHEELHOUSE ?= .state/wheelhouse
LXC_NAME   ?= phoenix-921

## The same stack provisioned inside a real LXC container (systemd as PID 1, the real unit, Step-CA TLS),
## pip installing offline from a wheelhouse copied into the container.
specs-lxc:
	$(HOST) --for lxc
	@$(MAKE) --no-print-directory venv
	$(BIN)/python -m provisioners.steps.wheelhouse --profile cpu --dest $(WHEELHOUSE)
	$(PYTEST) specs/ -p no:randomly --target lxc://$(LXC_NAME) --profile cpu --wheelhouse $(WHEELHOUSE) \
	  --phoenix-out reports/out-lxc --alluredir=reports/allure-results-lxc --junitxml=reports/out-lxc/junit-specs.xml $(SPECS_ARGS)

## vLLM CPU build from a release sdist through provisioners/steps/vllm_source.py (seed 000 step 3). Not in CI:
## on 2 cores it needs about 80 min, g++ >= 12.3 for vLLM >= 0.20, and libnuma-dev (docs/evidence/README.md).
source-build-cpu: venv
	python3 -m venv .venv-src && .venv-src/bin/pip install -q torch==2.13.0+cpu
	nice -n 19 $(BIN)/python -m provisioners.steps.vllm_source --python .venv-src/bin/python \
	  --repo-dir $${REPO_DIR:-/tmp/vllm_repo} --device cpu --sdist $${SDIST:?path to vllm-X.tar.gz} \
	  --max-jobs $${MAX_JOBS:-1} --no-deps --cache-root $${CACHE:-/tmp/vllm-wheels} \
	  $${GITCFG:+--env GIT_CONFIG_GLOBAL=$$GITCFG} --env CARGO_NET_OFFLINE=true \
	  --log reports/out/logs/vllm-source.log --summary reports/out/vllm-source.json

## The offline vLLM bundle for the borrowed H100 (tools/device/README.md).
device-bundle:
	nice -n 19 tools/device/build_bundle.sh /tmp/dev .whl

## Check only: change nothing, report drift.
audit:
	$(HOST) --for local --audit
	@$(MAKE) --no-print-directory venv
	$(PYTEST) specs/ --audit --alluredir=$(ALLURE) $(SPECS_ARGS)

## Lint once, with the settings in pyproject.toml (ruff).
lint: venv
	$(BIN)/ruff check .

## The suite's own tests (unit + real parts: LXC, the pct stand-in, podman, step-ca, chromium); the host
## packages they need are installed first (as root), and the summary says how many real-part tests ran.
## The lint runs first.
test:
	$(HOST) --for tests --ledger $(OUT)/ledger-host-tests.json --log $(OUT)/logs/host-tests.log
	@$(MAKE) --no-print-directory venv
	@$(MAKE) --no-print-directory lint
	$(PYTEST) tests/ --junitxml=$(OUT)/junit-tests.xml

## Quality gate on the last run (config/gate.yaml): exit 1 listing the unmet ids.
gate: venv
	$(BIN)/python -m reports.gate --compliance $(OUT)/compliance.json

## Allure report with history, the diff against the previous run, and the job summary.
report: venv
	$(BIN)/python -m reports.diff --out $(OUT)
	$(BIN)/python -m reports.allure generate --results $(ALLURE) --report reports/allure-report
	$(BIN)/python -m reports.summary --compliance $(OUT)/compliance.json

## Fill the catalog's `specs:` lists from the @pytest.mark.req markers.
catalog: venv
	$(BIN)/python -m reports.sync_catalog

clean:
	rm -rf $(OUT) $(ALLURE)   # reports/allure-report keeps its history/ for trends
