#!/bin/bash
# The device half of the H100 run (tools/device/README.md). Calls, back to back (warm 30 s):
#   bash tools/device/run.sh recv N      carry .whl/pN: keep bundle part N in /tmp/acc
#   bash tools/device/run.sh suite       install the bundle once, then the gpu-hopper specs; results -> $OUT
T0=$(date +%s); LIMIT=${LIMIT:-585}
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PHOENIX_PROGRESS=1
mkdir -p /tmp/acc; el() { echo $(( $(date +%s) - T0 )); }
case "$1" in
recv)
  cp .whl/p$2/part.$2 /tmp/acc/ && (cd /tmp/acc && ls -la part.* && sha256sum part.$2)
  if [ "$2" = 0 ]; then
    cp .whl/p0/site.sha256 /tmp/acc/
    nvidia-smi --query-gpu=name,driver_version,compute_cap,memory.total --format=csv
    which python3 cuobjdump nvcc git cmake ninja gcc; python3 --version; cuobjdump --version | tail -2
    gcc --version | head -1; cmake --version | head -1; cat /etc/os-release | grep PRETTY; nproc; free -g | head -2
    python3 -c 'import torch,sys; print("torch", torch.__version__, torch.version.cuda, torch.cuda.get_device_capability(), torch.cuda.get_arch_list(), sys.prefix)'
    python3 -m pip --version; df -h /tmp /opt | tail -2; echo "PATH=$PATH"
    ls -la /usr/bin/ninja /usr/local/bin/ninja /usr/local/cuda/bin/nvcc /usr/bin/nvcc 2>&1 | cut -c1-160
  fi
  exit 0 ;;
suite) ;;
*) echo "usage: $0 recv N | suite"; exit 2 ;;
esac

SP=/opt/vllm/lib/python3.12/site-packages
if [ ! -f /tmp/acc/installed ]; then
  [ -f .whl/p3/part.3 ] && cp .whl/p3/part.3 /tmp/acc/
  cd /tmp/acc && ls part.0 part.1 part.2 part.3 site.sha256 || { echo "BUNDLE PARTS MISSING (machine went cold?)"; exit 3; }
  t=$(date +%s)
  cat part.0 part.1 part.2 part.3 > site.tar.xz && sha256sum -c site.sha256 || exit 3
  rm -f part.*
  # /opt/vllm: a venv of the image's python; the image's torch (and pip) through a .pth, the bundle's
  # packages (a `pip install --target` made off-device from 87 pinned wheels) in its own site-packages
  TORCH_SP=$(python3 -c 'import os, torch; print(os.path.dirname(os.path.dirname(torch.__file__)))')
  python3 -m venv --without-pip /opt/vllm || exit 4
  tar -xJf site.tar.xz -C /tmp || exit 4
  cp -a /tmp/site/. $SP/ && rm -rf /tmp/site site.tar.xz
  echo "$TORCH_SP" > $SP/zz-phoenix-device-torch.pth
  printf '#!/opt/vllm/bin/python\nimport sys\nfrom vllm.entrypoints.cli.main import main\nif __name__ == "__main__":\n    sys.exit(main())\n' > /opt/vllm/bin/vllm
  chmod +x /opt/vllm/bin/vllm
  # the unit runs with systemd's clean PATH: FlashInfer's JIT needs ninja and nvcc there (apt's ninja-build
  # and the CUDA toolkit provide them on a real host; in this image they sit in the torch venv / CUDA dir)
  for b in ninja; do p=$(command -v $b) && [ ! -e /usr/local/bin/$b ] && ln -s "$p" /usr/local/bin/$b && echo "linked $p"; done
  echo "install_s=$(( $(date +%s) - t ))"; du -sh /opt/vllm; touch /tmp/acc/installed; cd - >/dev/null
fi
/opt/vllm/bin/python -c 'import vllm, torch, flashinfer; print("vllm", vllm.__version__, "torch", torch.__version__, torch.version.cuda, "flashinfer", flashinfer.__version__)' 2>&1 | tail -1
# pytest itself runs on the image's python with the bundle's packages (pydantic, testinfra, pytest-order)
export PYTHONPATH=$SP
export PHOENIX_PERF_DEADLINE_EPOCH=$(( T0 + LIMIT - 50 ))
OUTD=/tmp/phx-out; mkdir -p $OUTD
# run from a copy: the lead's torch check needs a one-line fix on this image (tools/device/patch_lead_torch_check.py)
rm -rf /tmp/phx-repo && cp -a . /tmp/phx-repo && rm -rf /tmp/phx-repo/.whl && python3 /tmp/phx-repo/tools/device/patch_lead_torch_check.py /tmp/phx-repo && python3 /tmp/phx-repo/tools/device/patch_lead_profile_env.py /tmp/phx-repo || exit 6
cd /tmp/phx-repo
left=$(( LIMIT - $(el) - 25 ))
echo "=== pytest at $(el)s, ${left}s left"
timeout $left python3 -m pytest -p no:cacheprovider -o testpaths=specs --profile gpu-hopper --target local:// \
  --config tools/device/phoenix_device.json --phoenix-out $OUTD -rA --tb=short \
  specs/test_20_toolchain.py specs/test_30_torch.py specs/test_31_gpu.py specs/test_40_vllm.py \
  specs/test_45_flashinfer.py specs/test_86_performance.py ${PHX_SPECS:-} 2>&1 | tee $OUTD/pytest-$(date +%H%M%S).log | grep -vE '^\s*$' | tail -120
echo "=== pytest done at $(el)s"
cp -a /var/lib/phoenix/perf $OUTD/perf-state 2>/dev/null
cp /var/log/phoenix/*.log $OUTD/logs/ 2>/dev/null
ls /var/lib/phoenix/ 2>/dev/null
mv $OUTD/pytest-*.log $OUTD/logs/ 2>/dev/null; tar -czf $OUT/results.tgz -C /tmp phx-out && ls -la $OUT
nvidia-smi --query-gpu=memory.used --format=csv,noheader; echo "total $(el)s"
