#!/usr/bin/env bash
# Speed of the `small` preset at REAL model sizes on one CUDA GPU, in under 10 minutes.
#
#   bash benchmarks/gpu_check.sh          # from a checkout, with factcap installed (pip install -e '.[hf]')
#
# Builds every pipeline role of `small` (BLIP-large and SmolVLM-256M captioners, Qwen2.5-1.5B,
# Grounding DINO tiny, BLIP VQA base) at its published architecture with RANDOM weights
# (configs stored in factcap: nothing is downloaded, no hub needed; ~3 GB of disk, built once
# and reused), then runs benchmarks/real_size.py on 64 images on the GPU in float16, with issue
# 16's speed-ups on and then off, and prints ONE JSON line: speedup_vs_before, images_per_s,
# stage_share, stage_s_per_image, claims_per_image, peak_gpu_gb, peak_rss_gb, and the "before"
# run's figures. Installs nothing; runs with HF_HUB_OFFLINE=1, so it is safe without internet.
#
# Settings (environment): IMAGES (64), BATCH_SIZE (16), DTYPE (float16), MAX_NEW_TOKENS (the
# preset's: 40/160 for the captioners, 384 for the LLM), LAYERS (the published counts),
# OUT_DIR (where the models are built; default $FACTCAP_CACHE/real_size/small-full),
# DEVICE (cuda; cuda:1 for another card), RUNS (both; optimised or baseline for one run),
# PYTHON (python).
set -euo pipefail

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
export TRANSFORMERS_VERBOSITY=error HF_HUB_DISABLE_PROGRESS_BARS=1
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python}
DEVICE=${DEVICE:-cuda}
IMAGES=${IMAGES:-64}
BATCH_SIZE=${BATCH_SIZE:-16}
DTYPE=${DTYPE:-float16}
CACHE=${FACTCAP_CACHE:-$HOME/.cache/factcap}
OUT_DIR=${OUT_DIR:-$CACHE/real_size/small-${LAYERS:-full}}

if ! "$PYTHON" -c "import factcap, torch, transformers" 2>/dev/null; then
    echo "gpu_check: factcap with its transformers extra is not importable by $PYTHON;" \
        "install the project first (pip install -e '.[hf]')" >&2
    exit 2
fi
if [[ "$DEVICE" == cuda* ]]; then
    if ! "$PYTHON" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
        echo "gpu_check: no CUDA device: this torch ($("$PYTHON" -c 'import torch; print(torch.__version__)'))" \
            "sees no usable GPU. Run it on a machine with an NVIDIA GPU and a CUDA build of torch," \
            "or run benchmarks/real_size.py --device cpu --layers 2 for a CPU figure." >&2
        exit 2
    fi
fi

args=(--preset small --images "$IMAGES" --batch-size "$BATCH_SIZE" --device "$DEVICE"
      --dtype "$DTYPE" --out-dir "$OUT_DIR" --runs "${RUNS:-both}")
[[ -n "${MAX_NEW_TOKENS:-}" ]] && args+=(--max-new-tokens "$MAX_NEW_TOKENS")
[[ -n "${LAYERS:-}" ]] && args+=(--layers "$LAYERS")

echo "gpu_check: building (or reusing) the small preset at real size in $OUT_DIR," \
    "then $IMAGES images on $DEVICE ($DTYPE)" >&2
"$PYTHON" benchmarks/real_size.py "${args[@]}" | tail -n 1
