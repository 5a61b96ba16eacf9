#!/usr/bin/env bash
# The GPU checks, in one prepared run on a lent GPU machine (the device tool; CI never runs this):
#   1. the CUDA cases of the tests (nvJPEG, cutting on the GPU, the collate threads' hand-over, the pinned copy,
#      steps that never sync with the host);
#   2. bench_gpu: the ladder (fp32, bf16, channels-last, compile) and the ablations of pretraining's defaults
#      (fused SGD, the deferred loss read) and CUDA graphs, for tiny and resnet18 at batch 128 and 1024;
#   3. where Ray imports (its wheels carried in .whl/, see docs/performance.md, "When a GPU is lent"):
#      bench_train through Ray Train with a real Ray Data stream, decode_on=data then decode_on=trainer.
# Writes logs and the benchmarks' JSON under $OUT (the device tool's output folder). About 8 minutes on an H200.
# Arguments go to bench_gpu.py (key=value); DEVICE=cpu runs the same on the CPU, small, to try the script here:
#   DEVICE=cpu OUT=/tmp/g bash .ci/gpu.sh "models=[tiny]" "patches_per_step=[64]" steps=2 crops=256 decode_batch=64
# PARTS picks the parts (default all three; the device tool allows 10 minutes a command, so split if in doubt):
#   PARTS="tests bench_gpu" bash .ci/gpu.sh; PARTS=bench_train bash .ci/gpu.sh
set -uo pipefail
DEVICE=${DEVICE:-cuda}
PARTS=${PARTS:-tests bench_gpu bench_train}
part() { [[ " $PARTS " == *" $1 "* ]]; }
OUT=${OUT:-/tmp/patchray-gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site:$PWD
fi
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || echo "no nvidia-smi"; } | tee "$OUT/machine.txt"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" | tee -a "$OUT/machine.txt"

part tests && timeout 180 python3 -m pytest -q -p no:cacheprovider -m "not slow" -k "cuda or device or ddp" \
  tests/shards/test_device_decode.py tests/patches/test_on_device.py tests/test_pipeline.py tests/train \
  2>&1 | tee "$OUT/tests.log"

part bench_gpu && timeout 300 python3 jobs/bench_gpu.py --out "$OUT/runs" device="$DEVICE" "$@" 2>&1 \
  | tee "$OUT/bench_gpu.log"

if ! part bench_train; then
  :
elif python3 -c "import ray" 2>/dev/null; then
  for where in data trainer; do
    if [ "$DEVICE" = cuda ]; then sizes="model=resnet18 patches_per_step=1024 threads=[8]"; else sizes="crops=256 epochs=2 threads=[1]"; fi
    # shellcheck disable=SC2086
    timeout 240 python3 jobs/bench_train.py --out "$OUT/runs" name="bench_train_$where" device="$DEVICE" \
      decode_on="$where" $sizes 2>&1 | tee "$OUT/bench_train_$where.log"
  done
else
  echo "no Ray here: bench_train through Ray Train not run" | tee "$OUT/bench_train.log"
fi
