#!/usr/bin/env bash
# Issue 15's no-regression check of the presets: main's src against this branch's, same budget,
# same machine, in one go: the bench smoke table (a forward-pass budget: accuracy does not depend
# on the machine's speed; base then mine) and the digits demo (a 90 s budget: base and mine run
# at the same time). Usage: benchmarks/seed_presets_check.sh BASE_REF OUT_MD (from the repo root).
set -euo pipefail
base_ref=${1:-main}
out_md=${2:-benchmarks/results/seed_examples/presets_check.md}
work=$(mktemp -d)
git archive "$base_ref" src | tar -x -C "$work"
py=.venv/bin/python
run() {  # run SIDE ARGS...: our CLI with SIDE's src first on the path
    local side=$1; shift
    if [ "$side" = base ]; then PYTHONPATH="$work/src" "$py" -m polystep.cli "$@"; else "$py" -m polystep.cli "$@"; fi
}
tasks="mlp_mnist int8_mnist argmax_fmnist staircase_mnist moe_20 snn_mnist"
{
    echo "# Preset no-regression check, $(date -u +%FT%TZ), 2 cores shared with other sessions"
    echo
    echo "base = $base_ref ($(git rev-parse --short "$base_ref")) via PYTHONPATH; mine = $(git rev-parse --short HEAD) (src dirty: $(git status --porcelain src | wc -l) files); load average at start $(cut -d' ' -f1 /proc/loadavg)"
    echo
    echo "## polystep bench $tasks --scale smoke --methods polystep --seeds 42,123,456"
    for side in base mine; do
        echo; echo "### $side"; echo
        run "$side" bench $tasks --scale smoke --methods polystep --seeds 42,123,456 \
            --out "$work/bench_$side" > "$work/bench_$side.log" 2>&1
        grep '^|' "$work/bench_$side/report.md" | head -20
    done
    echo; echo "## polystep demo --no-progress (90 s budget; base and mine run at the same time)"
    run base demo snn --no-progress --out "$work/demo_base" > "$work/demo_base.log" 2>&1 &
    run mine demo snn --no-progress --out "$work/demo_mine" > "$work/demo_mine.log" 2>&1
    wait
    for side in base mine; do
        echo; echo "### $side"; echo '```'; grep -E "done in|accuracy" "$work/demo_$side.log"; echo '```'
    done
} > "$out_md"
rm -rf "$work"
