#!/bin/bash
# No-speed-regression check of a refactor: the current tree against BASE_TREE (a worktree of an
# earlier commit: git worktree add --detach /tmp/base COMMIT), alternating, 3 repeats, one thread.
# Prints MAX-SAT wall seconds (polystep bench maxsat, 1000 vars, 2 seeds, 2M evaluations) and
# optimizer step_batch candidates/s (MLP 784-128-10 default preset, SNN 784-128-10 T=15 snn
# preset, batch 128, 8 s each). Usage: benchmarks/before_after.sh BASE_TREE
set -euo pipefail
BASE=$1
HERE=$(cd "$(dirname "$0")/.." && pwd)
PY=$HERE/.venv/bin/python
OUT=$(mktemp -d)
export OMP_NUM_THREADS=1
for rep in 1 2 3; do
  for side in base head; do
    if [ $side = base ]; then TREE=$BASE; else TREE=$HERE; fi
    PYTHONPATH=$TREE/src $PY -c "
import sys; sys.argv = ['polystep', 'bench', 'maxsat', '--vars', '1000', '--seeds', '0,1',
    '--methods', 'polystep', '--threads', '1', '--budget', '2000000', '--out', '$OUT/$side$rep']
from polystep.cli import main; main()" 2>&1 | grep '^| random' | awk -F'|' -v s=$side -v r=$rep \
      '{print "maxsat", s, "rep" r, "% sat", $7, "wall s", $11}'
    PYTHONPATH=$TREE/src $PY -c "
import time, torch
from torch import nn
from polystep import PolyStepOptimizer
from polystep.nn import spiking_mlp
torch.set_num_threads(1)
torch.manual_seed(0)
rates = {}
for name, model in [('mlp', nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))),
                    ('snn', spiking_mlp((784, 128, 10), num_steps=15))]:
    if name == 'snn':
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(3.0)
    opt = PolyStepOptimizer(model, preset='default' if name == 'mlp' else 'snn', seed=0)
    opt.progress = False
    x, y = torch.rand(128, 784), torch.randint(0, 10, (128,))
    for _ in range(2):
        opt.step_batch(x, y, nn.CrossEntropyLoss())
    e0, t = opt.evaluations, time.perf_counter()
    while time.perf_counter() - t < 8:
        opt.step_batch(x, y, nn.CrossEntropyLoss())
    rates[name] = (opt.evaluations - e0) / (time.perf_counter() - t)
print('step_batch $side rep$rep', ' '.join(f'{k} {v:.0f} cand/s' for k, v in rates.items()))
"
  done
done
