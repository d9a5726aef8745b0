#!/bin/bash
# The offline GPU host's half of a gpu-hopper run (tools/device/README.md). Calls, back to back:
#   bash tools/device/run.sh recv N            carry .whl/pN only: keep wheelhouse part N (part 0 also brings the
#                                              sha256 and the number of parts, and prints the machine's facts)
#   bash tools/device/run.sh assemble          join the parts, check the sha256, unpack the wheelhouse (suite does it too)
#   bash tools/device/run.sh suite [ARGS...]   the suite itself: pytest specs/ --profile gpu-hopper --wheelhouse ...
#   LIMIT=S bash tools/device/run.sh detach [ARGS...]   `suite` in its own process session, for a run longer than
#                                              one call (LIMIT seconds in all); returns at once
#   bash tools/device/run.sh wait [S]          wait up to S seconds (default LIMIT less 15) for the detached run:
#                                              its results and exit code once it ended, else 75 and what it measured
# The suite installs vLLM and FlashInfer from the wheelhouse; this script only assembles the wheelhouse,
# installs pytest's own plugins (requirements.txt's part the image lacks) and collects the results under $OUT.
# Env: RUN (results name, default run1), PROFILE (gpu-hopper), LIMIT (seconds this call may take, 585),
#      PERF_RESERVE (seconds of LIMIT the performance specs leave to the specs after them, 45).
# Exit status: `suite` exits with pytest's own code (124 when LIMIT cut it short); 3 a part or the sha256 is
# missing or wrong; 4 the runner's plugins could not be installed from the wheelhouse.
T0=$(date +%s); LIMIT=${LIMIT:-585}; RUN=${RUN:-run1}; PROFILE=${PROFILE:-gpu-hopper}
# NVLink multicast stays off: on a shared multi-GPU host it can take every GPU out of service (profiles set it too)
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PHOENIX_PROGRESS=1
ACC=${ACC:-/tmp/acc}; WH=$ACC/wheelhouse
P=${PARTS_DIR:-.whl}       # where the carried parts are (.whl-bw: the gpu-blackwell-hopper bundle, ACC=/tmp/acc-bw)
mkdir -p "$ACC"
# the packer's own zstd, for a host without one (pack_parts.sh puts it beside zstd parts, in part 0)
take_zstd() { [ ! -f "$P/p0/zstd" ] || { mkdir -p "$ACC/bin" && cp "$P/p0/zstd" "$ACC/bin/zstd" && chmod +x "$ACC/bin/zstd"; }; }
# the parts carried with this call (the last one may come with `suite` or `detach` itself)
take_parts() { for p in "$P"/p*/part.*; do [ -f "$p" ] && cp "$p" "$ACC/"; done; }
case "${1:-}" in
recv)
  cp "$P/p$2/part.$2" "$ACC/" || exit 3
  if [ "$2" = 0 ]; then
    cp "$P/p0/wheelhouse.sha256" "$P/p0/parts.txt" "$ACC/" || exit 3
    take_zstd
    nvidia-smi --query-gpu=index,name,driver_version,compute_cap,memory.total --format=csv
    nvidia-smi topo -m 2>/dev/null | head -6
    python3 -c 'import torch, sys; print("torch", torch.__version__, torch.version.cuda, torch.cuda.device_count(), sys.prefix)'
    nproc; free -g | head -2; df -h /tmp | tail -1
    echo "decompressors: $(command -v zstd xz | tr '\n' ' ')"
  fi
  ls -la "$ACC"; exit 0 ;;
detach)
  shift; mkdir -p "$ACC/out"; rm -f "$ACC/$RUN.rc" "$ACC/out/$RUN.tgz"
  [ -d "$WH" ] || [ -f "$ACC/parts.txt" ] || { echo "NO WHEELHOUSE: run 'recv 0' first (a cold machine lost it)"; exit 3; }
  export ACC RUN LIMIT PROFILE PARTS_DIR="$P"
  # the run reads its own copy of the checkout: every later call copies the tree onto this host again, and a file
  # replaced while the suite imports it stops the run ("No module named 'fixtures.provisioning'", seen on a host)
  # (the wheelhouse parts stay out of it: `recv` keeps them under $ACC, and the host may keep every carried part)
  [ -d "$WH" ] || take_parts
  snap="$ACC/tree-$RUN"; rm -rf "$snap" && mkdir -p "$snap" || exit 3
  tar -cf - --exclude=./.whl --exclude=./.whl-bw --exclude="./${P#./}" --exclude=./.git . | tar -xf - -C "$snap" \
    && cd "$snap" || exit 3
  OUT="$ACC/out" setsid -w nohup bash -c 'bash "$0" suite "$@"; echo $? > "$ACC/$RUN.rc"' "$0" "$@" \
    > "$ACC/$RUN.console" 2>&1 < /dev/null &
  echo $! > "$ACC/$RUN.pid"
  echo "detached: $RUN (pid $!, ${LIMIT}s at most); console $ACC/$RUN.console; collect with: RUN=$RUN bash $0 wait"
  exit 0 ;;
wait)
  pid=$(cat "$ACC/$RUN.pid" 2>/dev/null) || { echo "NO DETACHED RUN $RUN under $ACC (a cold machine lost it)"; exit 3; }
  end=$(( T0 + ${2:-$(( LIMIT - 15 ))} ))
  while [ ! -f "$ACC/$RUN.rc" ] && kill -0 "$pid" 2>/dev/null && [ "$(date +%s)" -lt "$end" ]; do sleep 5; done
  grep -aE 'PHOENIX|^(PASSED|FAILED|ERROR|SKIPPED)|^=+ .*(passed|failed|error)|: (changed|unchanged|failed)' \
    "/tmp/phx-out/$RUN/pytest.log" 2>/dev/null | cut -c1-250 | tail -25
  if [ ! -f "$ACC/$RUN.rc" ] && kill -0 "$pid" 2>/dev/null; then
    # what it measured so far comes back with every call: a host lost before the end keeps nothing
    tar -czf "$OUT/$RUN-partial.tgz" -C /var/lib/phoenix perf 2>/dev/null
    # and how far it got (its pytest log, ledger and console so far), apart: a large log never costs the rounds
    tar -czf "$OUT/$RUN-progress.tgz" -C "$ACC" "$RUN.console" \
      -C /tmp/phx-out --exclude='*/logs' --exclude='*/allure*' "$RUN" 2>/dev/null
    echo "STILL RUNNING: $RUN after $(( $(date +%s) - $(stat -c %Y "$ACC/$RUN.pid") ))s; call wait again"; exit 75
  fi
  tail -40 "$ACC/$RUN.console"
  cp "$ACC/out/$RUN.tgz" "$OUT/" 2>/dev/null
  rc=$(cat "$ACC/$RUN.rc" 2>/dev/null) || { echo "the detached run $RUN ended without an exit code (killed)"; exit 137; }
  exit "$rc" ;;
suite|assemble) cmd=$1; shift ;;
*) echo "usage: $0 recv N | assemble | suite [pytest args] | detach [pytest args] | wait [seconds]"; exit 2 ;;
esac

if [ ! -d "$WH" ]; then
  take_parts
  [ -f "$P/p0/wheelhouse.sha256" ] && cp "$P/p0/wheelhouse.sha256" "$P/p0/parts.txt" "$ACC/"
  n=$(cat "$ACC/parts.txt" 2>/dev/null) || { echo "NO WHEELHOUSE: run 'recv 0' first (a cold machine lost it)"; exit 3; }
  tb=$(awk '{print $2}' "$ACC/wheelhouse.sha256")            # wheelhouse.tar.xz or wheelhouse.tar.zst
  [ -f "$ACC/bin/zstd" ] || take_zstd
  z=$(command -v zstd || echo "$ACC/bin/zstd")                 # the host's, else the one part 0 brought
  case "$tb" in *.zst) unpack="$z -dc --long=31 $tb"; tool=zstd ;; *) unpack="xz -dc -T0 $tb"; tool=xz ;; esac
  ${unpack%% *} --version >/dev/null 2>&1 || { echo "NO $tool: the parts are $tb (rebuild them with COMPRESS=xz)"; exit 3; }
  ( set -o pipefail; cd "$ACC" && for i in $(seq 0 $((n - 1))); do cat "part.$i" || exit 3; done > "$tb" \
    && sha256sum -c wheelhouse.sha256 && $unpack | tar -xf - && rm -f part.* "$tb" ) || exit 3
  echo "wheelhouse: $(ls "$WH" | wc -l) wheels, assembled at $(( $(date +%s) - T0 ))s"
fi
[ "$cmd" = assemble ] && exit 0
# pytest's own plugins, as `pip install -r requirements.txt` gives a workstation (the image has pytest itself)
python3 -m pip install -q --no-index --find-links "$WH" -r "${RUNNER_REQS:-tools/device/runner-requirements.txt}" || exit 4
# the server runs with a service's clean PATH: FlashInfer's JIT needs ninja there (apt's ninja-build on a real host;
# in this image it is a pip console script next to python3)
nj=$(command -v ninja || echo "$(dirname "$(command -v python3)")/ninja")
[ -e /usr/local/bin/ninja ] || [ ! -x "$nj" ] || ln -s "$nj" /usr/local/bin/ninja

OUTD=/tmp/phx-out/$RUN; mkdir -p "$OUTD"
export PHOENIX_PERF_DEADLINE_EPOCH=$(( T0 + LIMIT - ${PERF_RESERVE:-45} ))   # the specs after the performance ones
left=$(( LIMIT - $(date +%s) + T0 - 20 ))
echo "=== pytest ($RUN, profile $PROFILE) at $(( $(date +%s) - T0 ))s, ${left}s left"
timeout "$left" python3 -m pytest specs/ -p no:cacheprovider --profile "$PROFILE" --target local:// \
  --config tools/device/phoenix_device.json --wheelhouse "$WH" --phoenix-out "$OUTD" -rA --tb=short "$@" \
  > "$OUTD/pytest.log" 2>&1
rc=$?
echo "=== pytest rc=$rc at $(( $(date +%s) - T0 ))s"
grep -E '^(PASSED|FAILED|ERROR|SKIPPED|XFAIL)|^=+ .*(passed|failed|error)' "$OUTD/pytest.log" | cut -c1-330 | tail -90
mkdir -p "$OUTD/state" && cp -a /var/lib/phoenix/perf /var/lib/phoenix/service "$OUTD/state/" 2>/dev/null
cp /var/log/phoenix/*.log "$OUTD/" 2>/dev/null
# what FlashInfer's JIT built on this host and with which nvcc (its build.ninja files name the compiler)
fj="$HOME/.cache/flashinfer"
[ ! -d "$fj" ] || { find "$fj" -maxdepth 4 | sort | head -300; echo "# nvcc per build.ninja:";
  grep -rH --include=build.ninja -E '^nvcc *=' "$fj" | head -100; } > "$OUTD/flashinfer-jit.txt" 2>&1
tar -czf "$OUT/$RUN.tgz" -C /tmp/phx-out "$RUN" && ls -la "$OUT"
nvidia-smi --query-gpu=index,memory.used --format=csv,noheader; echo "total $(( $(date +%s) - T0 ))s"
exit $rc
