#!/usr/bin/env bash
# The GPU checks, in one prepared run on a lent GPU machine (the device tool; CI never runs this):
#   1. the CUDA cases of the tests (nvJPEG, cutting on the GPU, the collate threads' hand-over, the pinned copy);
#   2. bench_gpu: the ladder (fp32, bf16, channels-last, compile) and the ablations of pretraining's defaults
#      (fused SGD, the deferred loss read) and CUDA graphs, for tiny and resnet18 at batch 128 and 1024;
#   3. where Ray imports (its wheels carried in .whl/, see docs/performance.md, "When a GPU is lent"):
#      bench_train through Ray Train with a real Ray Data stream, decode_on=data then decode_on=trainer.
# Writes logs and the benchmarks' JSON under $OUT (the device tool's output folder). About 8 minutes on an H200.
set -uo pipefail
OUT=${OUT:-/tmp/patchray-gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site:$PWD
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/machine.txt"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" | tee -a "$OUT/machine.txt"

timeout 180 python3 -m pytest -q -p no:cacheprovider -m "not slow" -k "cuda or device or ddp" \
  tests/shards/test_device_decode.py tests/patches/test_on_device.py tests/test_pipeline.py tests/train \
  2>&1 | tee "$OUT/tests.log"

timeout 300 python3 jobs/bench_gpu.py --out "$OUT/runs" steps=30 2>&1 | tee "$OUT/bench_gpu.log"

if python3 -c "import ray" 2>/dev/null; then
  for where in data trainer; do
    timeout 150 python3 jobs/bench_train.py --out "$OUT/runs" name="bench_train_$where" device=cuda \
      decode_on="$where" model=resnet18 patches_per_step=1024 2>&1 | tee "$OUT/bench_train_$where.log"
  done
else
  echo "no Ray here: bench_train through Ray Train not run" | tee "$OUT/bench_train.log"
fi
