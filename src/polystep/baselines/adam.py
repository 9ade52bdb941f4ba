"""Adam on a smooth twin, and the top-1 accuracy every benchmark scores with.

Adam has no loop of its own: build ``torch.optim.Adam(twin.parameters(), **NN_PRESETS["adam"])``
for the twin made by :func:`polystep.nn.smooth_twin` and run it with
:func:`polystep.training.train` (``max_evaluations`` counts one forward pass per step; its
backward pass is not counted, which a ``max_seconds`` budget captures). Copy the twin's weights
into the hard model with ``load_state_dict`` to score the hard network
(``polystep.bench.methods.run_adam`` does both).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from polystep.baselines.module_objective import Batch


@torch.no_grad()
def accuracy(model: nn.Module, batches: Iterable[Batch]) -> float:
    """Top-1 accuracy of ``model`` over ``batches`` (ties: lowest class, as ``argmax``)."""
    was_training = model.training
    model.eval()
    correct = total = 0
    for x, y in batches:
        correct += int((model(x).argmax(dim=-1) == y).sum())
        total += int(y.numel())
    model.train(was_training)
    return correct / max(total, 1)
