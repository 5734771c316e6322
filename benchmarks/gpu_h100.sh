#!/usr/bin/env bash
# The H100 figures of BENCHMARKS.md (issue 9, items 2-5). Run from the repository root on one H100 with the
# package installed; every result lands in $OUT (default benchmarks/out-h100) as JSON next to a log.
#
#   bash benchmarks/gpu_h100.sh            # ~25 min of GPU time (torch.compile warm-ups included)
#
# Targets: WRN-28-10 TRADES-10 batch 512 bf16 >= 45% MFU (exact FLOPs) and >= 3x the plain fp32 path of the same run.
set -euo pipefail
OUT=${OUT:-benchmarks/out-h100}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,power.limit,clocks.max.sm --format=csv | tee "$OUT/gpu.csv"
python -c "import torch, timm, robustscale; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'cudnn', torch.backends.cudnn.version(), 'timm', timm.__version__, 'robustscale', robustscale.__version__)" \
  | tee "$OUT/versions.txt"
date -u +%Y-%m-%dT%H:%MZ | tee "$OUT/date.txt"

B="robustscale bench --model wrn_28_10 --loss trades --steps 10 --batch 512 --iters 10 --warmup 5 --repeats 3 --json"

# 1. the headline: the whole fast path against the plain fp32/NCHW/eager path, alternating in one process
$B --precision bf16 --channels-last --compile --warmup 10 --baseline > "$OUT/headline.json"

# 2. each switch on its own (cudnn benchmark is on unless --no-cudnn-benchmark)
$B --no-cudnn-benchmark                                   > "$OUT/sw_plain.json"
$B                                                        > "$OUT/sw_cudnn_benchmark.json"
$B --channels-last                                        > "$OUT/sw_channels_last.json"
$B --precision bf16                                       > "$OUT/sw_bf16.json"
$B --precision bf16 --channels-last                       > "$OUT/sw_bf16_cl.json"
$B --precision bf16 --channels-last --compile --warmup 10 > "$OUT/sw_bf16_cl_compile.json"

# 3. bf16 trains as robust as fp32 (digits recipe on the GPU, 5 seeds)
python benchmarks/bf16_vs_fp32.py --seeds 0 1 2 3 4 --out "$OUT/bf16_vs_fp32.json" | tee "$OUT/bf16_vs_fp32.md"

# 4. cost vs FLOPs: WRN-16-4 ... WRN-70-16 x 1 ... 10 attack steps, bf16 + channels_last, batch 512
python benchmarks/scaling_table.py --out "$OUT/scaling.json" | tee "$OUT/scaling.md"

python - "$OUT" <<'EOF'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
for f in sorted(out.glob("*.json")):
    r = json.loads(f.read_text())
    if isinstance(r, dict) and "img_per_s" in r:
        extra = f" | baseline {r['baseline_img_per_s']:.0f} img/s, speedup {r['speedup']:.2f}x" if "speedup" in r else ""
        print(f"| {f.stem} | {r['img_per_s']:.0f} | {r['tflops']:.1f} | {r['mfu']:.1%} | {r['peak_mem_gb']:.1f}{extra} |")
EOF
