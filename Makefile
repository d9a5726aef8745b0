# Phoenix vLLM spec suite. Quick start: `make specs` (build + verify on the embedded default), `make test`.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
PYTEST  := $(BIN)/python -m pytest
OUT     := reports/out
ALLURE  := reports/allure-results
SPECS_ARGS ?=

.PHONY: venv specs specs-lxc audit test catalog report gate clean source-build-cpu device-bundle

$(BIN)/python: requirements.txt
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	touch $(BIN)/python

venv: $(BIN)/python

## The main job: build and verify on the embedded default (local target, cpu profile, tiny model, real vLLM).
specs: venv
	$(PYTEST) specs/ -p no:randomly --alluredir=$(ALLURE) --junitxml=$(OUT)/junit-specs.xml $(SPECS_ARGS)

WHEELHOUSE ?= .state/wheelhouse
LXC_NAME   ?= phoenix-921

## The same stack provisioned inside a real LXC container (systemd as PID 1, the real unit, Step-CA TLS),
## pip installing offline from a wheelhouse copied into the container.
specs-lxc: venv
	$(BIN)/python -m provisioners.steps.wheelhouse --profile cpu --dest $(WHEELHOUSE)
	$(PYTEST) specs/ -p no:randomly --target lxc://$(LXC_NAME) --profile cpu --wheelhouse $(WHEELHOUSE) \
	  --phoenix-out reports/out-lxc --alluredir=reports/allure-results-lxc --junitxml=reports/out-lxc/junit-specs.xml $(SPECS_ARGS)

## vLLM built from source by the suite itself (profile cpu-source: the vllm==0.11.0 sdist, seed 000 step 3, then the
## wheel cache); run outside CI (docs/evidence/source-build.md has the times). A second run with the same key
## installs the cached wheel instead of compiling.
source-build-cpu: venv
	nice -n 10 $(PYTEST) specs/test_32_vllm_source.py specs/test_40_vllm.py -p no:randomly --profile cpu-source \
	  --target local:// $(SPECS_ARGS)

## The offline vLLM bundle for the borrowed H100 (tools/device/README.md).
device-bundle:
	nice -n 19 tools/device/build_bundle.sh /tmp/dev .whl

## Check only: change nothing, report drift.
audit: venv
	$(PYTEST) specs/ --audit --alluredir=$(ALLURE) $(SPECS_ARGS)

## The suite's own tests (unit + real local parts).
test: venv
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
