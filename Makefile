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

.PHONY: venv specs specs-lxc audit lint test catalog report gate clean source-build-cpu device-bundle install-blackwell \
        drift-install drift-uninstall drift-run

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

## vLLM built from source by the suite itself (profile cpu-source: the vllm==0.11.0 sdist, seed 000 step 3, then the
## wheel cache); run outside CI (docs/evidence/source-build.md has the times). A second run with the same key
## installs the cached wheel instead of compiling.
source-build-cpu: venv
	nice -n 10 $(PYTEST) specs/test_32_vllm_source.py specs/test_40_vllm.py -p no:randomly --profile cpu-source \
	  --target local:// $(SPECS_ARGS)

## The documents' own GPU stack installed for real on a host without a GPU (profile gpu-blackwell, --install-only):
## torch as the vLLM 0.10.2 wheel pins it (2.8.0, CUDA 12.8), vLLM 0.10.2, FlashInfer 0.3.1, pip check after each step,
## the sm_120 kernel check on the installed binaries, and a second converge; runtime specs are not verified (no
## sm_120 GPU). Its own venv, so it never touches the cpu stack's /opt/vllm (docs/evidence/blackwell-install/).
BLACKWELL_VENV ?= /opt/vllm-blackwell
install-blackwell: venv
	nice -n 10 $(PYTEST) specs/test_20_toolchain.py specs/test_30_torch.py specs/test_31_gpu.py specs/test_40_vllm.py \
	  specs/test_45_flashinfer.py specs/test_95_idempotence.py -p no:randomly --target local:// --profile gpu-blackwell \
	  --install-only --venv $(BLACKWELL_VENV) --phoenix-out reports/out-blackwell \
	  --junitxml=reports/out-blackwell/junit-specs.xml $(SPECS_ARGS)

## The offline vLLM bundle for the offline H100 host (tools/device/README.md).
device-bundle:
	nice -n 19 tools/device/build_bundle.sh /tmp/dev .whl

## Check only: change nothing, report drift.
audit:
	$(HOST) --for local --audit
	@$(MAKE) --no-print-directory venv
	$(PYTEST) specs/ --audit --alluredir=$(ALLURE) $(SPECS_ARGS)

## The drift watch (reports/drift.py): a systemd timer on this machine audits the config's `drift.targets` every
## `drift.interval_min` minutes, keeps each run under `drift.out_dir`/<target>/history/, names drift (exit 3, the
## journal, drift.md) and writes Prometheus text for node_exporter's textfile collector. Needs systemd as PID 1.
CONFIG ?= config/phoenix_lxc_configs.json
drift-install: venv
	$(BIN)/python -m reports.drift install --config $(CONFIG)

drift-uninstall: venv
	$(BIN)/python -m reports.drift uninstall --config $(CONFIG)

## One drift run now, in the foreground (what the timer's service runs).
drift-run: venv
	$(BIN)/python -m reports.drift run --config $(CONFIG)

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

## Allure report of the last run (each spec run empties the results folder when it starts, so the report
## holds one run), with trends and each spec's history carried from the previous report's history/; the
## diff against the previous run, and the job summary.
report: venv
	$(BIN)/python -m reports.diff --out $(OUT)
	$(BIN)/python -m reports.allure generate --results $(ALLURE) --report reports/allure-report
	$(BIN)/python -m reports.summary --compliance $(OUT)/compliance.json

## Fill the catalog's `specs:` lists from the @pytest.mark.req markers.
catalog: venv
	$(BIN)/python -m reports.sync_catalog

clean:
	rm -rf $(OUT) $(ALLURE)   # reports/allure-report keeps its history/ for trends
