#!/usr/bin/env bash
# The GPU checks in one run, on the first CUDA device, each step under a time limit (about eight minutes at most):
#   1. the card, driver and torch build (device.txt); without a CUDA device the script stops here;
#   2. the CUDA-marked tests (cuda_tests.log);
#   3. speed_vs_peers family by family, both sides on the GPU, each family's rows appended to
#      speed_vs_peers.csv as it finishes (speed_vs_peers.log prints the ratios), so a step cut short keeps
#      the families it finished;
#   4. benchmarks/run.py --quick --device cuda for the adjoint memory rows (peak GPU memory with and without
#      the adjoint), each into a folder of its own.
# Usage, from the repository root:
#   bash benchmarks/gpu_checks.sh [OUT] [DEVICE]
# OUT defaults to benchmarks/results/gpu; DEVICE to cuda (cpu runs steps 1, 3 and 4 on the CPU, to check the
# script). Needs torch with CUDA, torchdiffeq, torchsde, scipy, pandas, scikit-learn and pytest importable by
# $PYTHON (default python3); dynlearn is read from this checkout. FAMILIES and BENCHMARKS override the lists of
# steps 3 and 4. Exit status: 0 when every step finished, 1 otherwise (the logs say which).
set -uo pipefail

out=${1:-benchmarks/results/gpu}
device=${2:-cuda}
python=${PYTHON:-python3}
families=${FAMILIES-"neural_ode hamiltonian lagrangian neural_sde neural_ode_driven_held neural_ode_driven_linear latent_sde neural_ode_irregular_torchode"}
benchmarks=${BENCHMARKS-"adjoint_memory sde_adjoint_memory"}
mkdir -p "$out"
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
status=0

"$python" - "$device" > "$out/device.txt" <<'EOF' || { cat "$out/device.txt"; exit 1; }
import platform
import subprocess
import sys

import torch

device = sys.argv[1]
print(f"python {platform.python_version()}, torch {torch.__version__}, CUDA build {torch.version.cuda}")
if device == "cuda":
    if not torch.cuda.is_available():
        sys.exit("gpu_checks: torch sees no CUDA device; run with DEVICE=cpu to check the script on the CPU.")
    properties = torch.cuda.get_device_properties(0)
    print(f"{properties.name}, {properties.total_memory / 2**30:.1f} GiB, {properties.multi_processor_count} SMs")
    try:
        print(subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30).stdout.strip())
    except (OSError, subprocess.SubprocessError) as error:
        print(f"nvidia-smi: {error}")
else:
    print(f"{platform.machine()}, {torch.get_num_threads()} torch threads")
EOF
cat "$out/device.txt"

if [ "$device" = cuda ]; then
    timeout 100 "$python" -m pytest -q -p no:cacheprovider -m cuda tests > "$out/cuda_tests.log" 2>&1 || status=1
    tail -n 3 "$out/cuda_tests.log"
fi

if [ -n "$families" ]; then
    # shellcheck disable=SC2086  # the families are separate words
    timeout 280 "$python" benchmarks/speed_vs_peers.py --quick --device "$device" --families $families \
        --out "$out/speed_vs_peers.csv" 2>&1 | grep -v '^USDT' > "$out/speed_vs_peers.log" || status=1
    cat "$out/speed_vs_peers.log"
fi

for name in $benchmarks; do
    timeout 60 "$python" benchmarks/run.py --quick --device "$device" --only "$name" --out "$out/$name" 2>&1 \
        | grep -v '^USDT' > "$out/$name.log" || status=1
    tail -n 1 "$out/$name.log"
done
exit $status
