#!/usr/bin/env bash
# InfMAE-base pre-training throughput and model FLOP utilization on one GPU: bf16 autocast, torch.compile,
# batch 128 at 224x224, forward + backward + AdamW (against transformers' ViTMAE-B when it is installed).
# Runs in well under 5 minutes on an H100. Usage: bash benchmarks/gpu_pretrain.sh [extra model_throughput args]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  echo "gpu_pretrain.sh: no CUDA GPU visible to torch; nothing to measure (run it on a GPU machine)." >&2
  exit 2
fi
"$PY" -c 'import torch; p = torch.cuda.get_device_properties(0); print(f"GPU: {p.name}, {p.total_memory / 2**30:.0f} GiB")'
MODELS="infmae_base"
"$PY" -c 'import transformers' 2>/dev/null && MODELS="infmae_base hf_vitmae_base"
ARGS=(--device cuda --batch "${BATCH:-128}" --precision bf16 --warmup "${WARMUP:-3}" --steps "${STEPS:-10}" --models $MODELS)
# torch.compile first; if compilation fails on this stack, report it and measure eager mode instead
if ! timeout "${COMPILE_TIMEOUT:-200}" "$PY" benchmarks/model_throughput.py "${ARGS[@]}" --compile "$@"; then
  echo "gpu_pretrain.sh: the torch.compile run failed or timed out; eager-mode figures follow" >&2
  timeout 90 "$PY" benchmarks/model_throughput.py "${ARGS[@]}" "$@"
fi

# ----------------------------------------------------------------------------------------------------------
# Part 2 (issues 8, 19): the real pre-training pipeline on this GPU. First the loader alone (img/s per worker
# on the real frames of ../shared/data, and the packed gather vs decode per core), then `infmae.train.pretrain`
# (InfMAE base, bf16, torch.compile) for PIPE_STEPS optimizer steps from a pack of the frames and from the
# frames themselves: img/s, MFU, loader stall %.
# ----------------------------------------------------------------------------------------------------------
DATA=${INFMAE_DATA:-../shared/data}
if [ ! -d "$DATA/sirst" ]; then
  echo "gpu_pretrain.sh: real frames not found at $DATA (set INFMAE_DATA); pipeline part skipped" >&2
  exit 0
fi
NW=$(( $(nproc) - 2 )); [ "$NW" -lt 1 ] && NW=1
echo "== data pipeline alone (img/s per worker; packed gather vs decode per core) beside the model's img/s =="
timeout 300 "$PY" benchmarks/dataloader_throughput.py --data "$DATA" --workers "1,4,$NW" --seconds 5 --rounds 2 \
  --models infmae_base --model-batch "${BATCH:-128}" --model-steps 10 || echo "gpu_pretrain.sh: loader benchmark failed" >&2
# issue 19: pack the frames first (parallel `--shard K/N` jobs), then train from the pack (uint8 gather on the
# host, crop/flip/normalize on the GPU), then the same from the decode loader: img/s, MFU, loader stall %
# (goal: stall < 2 % from the pack at the base preset).
PIPE=(--data "$DATA" --pipeline-steps "${PIPE_STEPS:-300}" --pipeline-preset infmae_base --size 224
      --batch "${BATCH:-128}" --workers "$NW" --precision bf16)
for LOADER in packed decode; do
  echo "== real pipeline ($LOADER loader): infmae pretrain for ${PIPE_STEPS:-300} steps (batch ${BATCH:-128}, $NW workers) =="
  if ! timeout "${COMPILE_TIMEOUT:-300}" "$PY" benchmarks/dataloader_throughput.py "${PIPE[@]}" --pipeline-loader "$LOADER" --compile; then
    echo "gpu_pretrain.sh: the compiled $LOADER pipeline run failed or timed out; eager-mode figures follow" >&2
    timeout 240 "$PY" benchmarks/dataloader_throughput.py "${PIPE[@]}" --pipeline-loader "$LOADER"
  fi
done

# ----------------------------------------------------------------------------------------------------------
# Part 3 (issue 15): the irstd fine-tuning step at 256 px (infmae_tiny and infmae_base against torchvision's
# FCN-ResNet50: img/s, peak memory), then the SIRST transfer experiment at the base preset (four starts x
# three seeds, benchmarks/irstd_transfer.py; about an hour on one H100-class GPU; IRSTD_TRANSFER=0 skips it).
# ----------------------------------------------------------------------------------------------------------
echo "== irstd fine-tuning step at 256 px (bf16, batch ${IRSTD_BATCH:-16}) =="
timeout 300 "$PY" benchmarks/irstd_transfer.py throughput --device cuda --precision bf16 \
  --presets infmae_tiny infmae_base --batch "${IRSTD_BATCH:-16}" --steps 10 || echo "gpu_pretrain.sh: irstd throughput failed" >&2
if [ "${IRSTD_TRANSFER:-1}" != 0 ]; then
  echo "== irstd transfer on SIRST at infmae_base (scratch / IAM / random masking / no fusion, 3 seeds) =="
  timeout "${IRSTD_TIMEOUT:-5400}" "$PY" benchmarks/irstd_transfer.py transfer --data "$DATA" --preset infmae_base \
    --device cuda --pretrain-steps "${IRSTD_PRETRAIN_STEPS:-3000}" --pretrain-size 224 --pretrain-batch 128 \
    --pretrain-lr 6e-4 --finetune-steps "${IRSTD_FT_STEPS:-2000}" --finetune-size 256 --batch 16 --workers "$NW" \
    --out "${IRSTD_OUT:-runs/irstd-transfer-base}" || echo "gpu_pretrain.sh: irstd transfer failed or timed out" >&2
fi
