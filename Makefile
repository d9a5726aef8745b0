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

.PHONY: venv specs specs-lxc specs-fleet specs-fleet-measure gate-fleet audit lint test catalog report gate clean source-build-cpu cuda-configure device-bundle install-blackwell \
        device-bundle-blackwell drift-install drift-uninstall drift-run

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

FLEET     ?= config/fleet/lxc-cpu.yaml
FLEET_OUT := reports/out-fleet

## A fleet in one run (docs/FLEET.md): the targets of $(FLEET) (three real LXC containers, each with its own
## cpu-profile vLLM) provisioned and verified side by side, one pytest-xdist worker each; one compliance report per
## target in $(FLEET_OUT)/<name>/ and the merged fleet matrix $(FLEET_OUT)/fleet.{json,md,html}.
specs-fleet:
	$(HOST) --for lxc
	@$(MAKE) --no-print-directory venv
	$(BIN)/python -m provisioners.steps.wheelhouse --profile cpu --dest $(WHEELHOUSE)
	$(PYTEST) specs/ -p no:randomly --fleet $(FLEET) --wheelhouse $(WHEELHOUSE) --phoenix-out $(FLEET_OUT) \
	  --alluredir=reports/allure-results-fleet $(SPECS_ARGS)

## The same fleet in one run, then its members one after another: wall time, memory and CPU time per container
## (docs/evidence/fleet/).
specs-fleet-measure:
	$(HOST) --for lxc
	@$(MAKE) --no-print-directory venv
	$(BIN)/python -m provisioners.steps.wheelhouse --profile cpu --dest $(WHEELHOUSE)
	$(BIN)/python -m tools.fleet.measure --fleet $(FLEET) --wheelhouse $(WHEELHOUSE) --evidence docs/evidence/fleet

## The gate for each target of the last fleet run and for the fleet (config/gate.yaml `fleet: require:`);
## one target alone: make gate OUT=$(FLEET_OUT)/<name>
gate-fleet: venv
	$(BIN)/python -m reports.gate --fleet $(FLEET_OUT)/fleet.json

## vLLM built from source by the suite itself (profile cpu-source: the vllm==0.12.0 sdist on its torch 2.9.1, seed 000
## step 3, then the wheel cache); run outside CI (docs/evidence/source-build.md has the times). A second run with the
## same key installs the cached wheel instead of compiling. SPECS_ARGS can add the serving specs (test_50 to test_85).
source-build-cpu: venv
	nice -n 10 $(PYTEST) specs/test_32_vllm_source.py specs/test_40_vllm.py -p no:randomly --profile cpu-source \
	  --target local:// $(SPECS_ARGS)

## vLLM's CUDA build set up for sm_120 on this host without a GPU (provisioners/steps/cuda_configure.py): NVIDIA's
## toolkit wheels, the CMake configure of vLLM's sdist for TORCH_CUDA_ARCH_LIST "12.0" and "9.0;12.0" against the venv's
## CUDA build of torch (CUDA_CFG_PY: a venv with one, e.g. cpu-source's torch 2.9.1+cu128 in /opt/vllm), one csrc kernel
## compiled, then specs/test_33 reads the folders (docs/evidence/source-build.md).
CUDA_CFG_PY ?= /opt/vllm/bin/python
CUDA_CFG_REPO ?= /var/tmp/phoenix-cuda-configure/vllm-0.11.0
CUDA_CFG_DIR ?= /var/tmp/phoenix-cuda-configure
cuda-configure: venv
	nice -n 10 $(BIN)/python -m provisioners.steps.cuda_configure --python $(CUDA_CFG_PY) --repo $(CUDA_CFG_REPO) \
	  --arch-list "12.0" --build-dir $(CUDA_CFG_DIR)/sm120
	-nice -n 10 $(BIN)/python -m provisioners.steps.cuda_configure --python $(CUDA_CFG_PY) --repo $(CUDA_CFG_REPO) \
	  --arch-list "9.0;12.0" --build-dir $(CUDA_CFG_DIR)/sm90-sm120   # stops at FlashMLA here: the spec says so
	$(PYTEST) specs/test_33_cuda_configure.py -p no:randomly --cuda-configure $(CUDA_CFG_DIR)/sm120 \
	  --cuda-configure $(CUDA_CFG_DIR)/sm90-sm120 $(SPECS_ARGS)

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

## The documents' own stack (profile gpu-blackwell-hopper: vLLM 0.10.2, torch 2.8.0 cu128, FlashInfer 0.3.1) for the
## offline H100/H200 host: 7.7 GB of wheels stored once what the served run never loads is dropped (the trim file),
## streamed (BW_STREAM=1: never on disk) through zstd --long into parts under .whl-bw/ sized by pack_parts.sh
## (tools/device/README.md, "The documents' own stack on the offline host").
## Disk: the 5 GB download under BW_BUNDLE_DIR, about 2.2 GB of parts, one repacked wheel at a time in TMPDIR (1.6 GB).
BW_BUNDLE_DIR ?= /var/tmp/bw-bundle
## zstd -19: 76 parts against -10's 84 (8 fewer transfers to the GPU host, the same unpack speed); about 36 min here
BW_ZSTD_OPT ?= -19 -T0 --long=31
BW_STREAM ?= 1
device-bundle-blackwell:
	nice -n 19 env PINS=$(CURDIR)/tools/device/bundle-pins-gpu-blackwell-hopper.txt STREAM=$(BW_STREAM) \
	  TRIM_FILE=$(CURDIR)/tools/device/bundle-trim-gpu-blackwell-hopper.txt COMPRESS=zstd ZSTD_OPT="$(BW_ZSTD_OPT)" \
	  tools/device/build_bundle.sh $(BW_BUNDLE_DIR) .whl-bw

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
	$(BIN)/python -m provisioners.steps.drift_timer install --config $(CONFIG)

drift-uninstall: venv
	$(BIN)/python -m provisioners.steps.drift_timer uninstall --config $(CONFIG)

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
