#!/usr/bin/env bash
# The GPU check of issue 14, one prepared run: export (verified against torch), serve on the
# GPU, compare answers and profiles with torch, plan on the GPU profiles, and the router
# benchmark against Triton reached directly.
#
#   bench/gpu.sh OUT              on a GPU machine (a few minutes on an H200)
#   DRY_RUN=1 bench/gpu.sh OUT    the same steps on this machine's CPU, smaller and shorter
#
# PY: the Python with tnx's dependencies (default .venv/bin/python; on the device machine
# python3 with the wheels on PYTHONPATH). Every step's output lands in OUT; a failed step
# stops the run, and the fleet is taken down whatever happens.
set -euo pipefail
OUT=${1:-bench-out/gpu}
PY=${PY:-.venv/bin/python}
TNX=("$PY" -m deploy.cli)
if [[ ${DRY_RUN:-0} == 1 ]]; then
  BATCHES=1,2,4 RESNET=3x64x64 DURATION=3 LOADS=0.5,1 REPEATS=3
else
  BATCHES=1,2,4,8,16,32,64 RESNET=3x224x224 DURATION=10 LOADS=0.5,1,1.5,2 REPEATS=20
fi
MODELS=(
  "tiny_mlp=exporters.examples:tiny_mlp@64"
  "convnet64=exporters.examples:convnet64@3x64x64"
  "resnet50=bench/gpu_models.py:resnet50@$RESNET"
)
mkdir -p "$OUT"
step() { echo "== $* ($(date -u +%T))"; }

step "environment"
"$PY" - <<'EOF' | tee "$OUT/env.txt"
import onnxruntime as ort, torch
print("torch", torch.__version__, "cuda", torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
print("onnxruntime", ort.__version__, ort.get_available_providers())
EOF

step "export and verify against torch"
margs=()
for m in "${MODELS[@]}"; do
  name=${m%%=*} rest=${m#*=}
  "${TNX[@]}" export "${rest%@*}" --input-shape "${rest##*@}" --name "$name" --out "$OUT/models"
  "${TNX[@]}" repo add "$OUT/models/$name.onnx" --repo "$OUT/repo" --backend python --max-batch 64
  margs+=(--model "$m")
done

step "fleet"
"${TNX[@]}" fleet up --servers 1 --repo "$OUT/repo" --state "$OUT/fleet.json"
trap '"${TNX[@]}" fleet down --state "$OUT/fleet.json" || true' EXIT

step "answers through Triton against torch"
"$PY" -m bench.gpu_check answers --fleet "$OUT/fleet.json" --repo "$OUT/repo" "${margs[@]}" \
  --out "$OUT/answers.json"

step "tnx profile"
"${TNX[@]}" profile --fleet "$OUT/fleet.json" --repo "$OUT/repo" --batches "$BATCHES" \
  --out "$OUT/profiles.json"

step "profiles against torch"
"$PY" -m bench.gpu_check timings --profiles "$OUT/profiles.json" "${margs[@]}" \
  --repeats "$REPEATS" --out "$OUT/timings.json"

step "tnx plan on the measured profiles"
"$PY" - "$OUT" <<'EOF'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
profiles = json.loads((out / "profiles.json").read_text())["profiles"]
sessions = []
for p in profiles:
    l8 = next((b["latency_ms"] for b in p["batches"] if b["batch"] >= 4), p["batches"][-1]["latency_ms"])
    for i, (slo, rate) in enumerate([(4 * l8, 200.0), (10 * l8, 1000.0)]):
        sessions.append({"id": f"{p['model']}-{i}", "model": p["model"], "slo_ms": slo, "rate": rate})
(out / "workload.json").write_text(json.dumps({"sessions": sessions}, indent=2))
EOF
"${TNX[@]}" plan --profiles "$OUT/profiles.json" --workload "$OUT/workload.json" \
  --fleet "$OUT/fleet.json" --out "$OUT/plan.json"

"${TNX[@]}" fleet down --state "$OUT/fleet.json"
trap - EXIT

step "router benchmark against Triton directly"
"${TNX[@]}" bench router --out "$OUT/router" --servers 1 --parts latency,goodput \
  --duration "$DURATION" --loads "$LOADS"
step "done: $OUT"
