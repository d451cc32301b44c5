#!/usr/bin/env bash
# Set up (if needed), then caption the bundled example photos with the tiny preset, offline.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
export HF_HUB_OFFLINE=1
factcap caption src/factcap/examples -o demo/captions.jsonl --overwrite --style detailed --style short
python - <<'PY'
import json
for line in open("demo/captions.jsonl"):
    r = json.loads(line)
    print(f"\n== {r['source']} [{r['status']}]")
    for p in r["proposals"]:
        print(f"  proposal {p['model']}: {p['text'][:100]}")
    for c in r["claims"][:6]:
        print(f"  claim [{c['kind']}] {c['text'][:60]!r} -> {c['verdict']} ({c['score']})")
    for style, text in r["captions"].items():
        print(f"  caption {style}: {text[:120]}")
PY
