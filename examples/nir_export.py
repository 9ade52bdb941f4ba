"""Export a trained hard-LIF SNN to NIR (Neuromorphic Intermediate Representation), and back.

NIR (https://neuroir.org, PyPI ``nir``) is the exchange format that neuromorphic toolchains
(Lava/Loihi, SpiNNaker2, Xylo, snnTorch, Norse, ...) read. The SNN is trained with PolyStep on
the digits, then written as the graph ``input -> Affine -> LIF -> Affine -> LIF -> output`` to
an HDF5 ``.nir`` file. Three checks follow:

1. round trip: read the file, rebuild the spiking MLP from the graph alone, and compare weights
   and test-set spike counts with the trained model (both must be identical);
2. semantics: simulate the graph from NIR's own equations (numpy, forward Euler with step
   ``dt``) and compare its predictions with the PyTorch model;
3. the held-out test accuracy of the exported network.

The discrete neuron ``v <- beta v + I; spike = 1[v >= theta]; reset to 0`` is NIR's LIF
``tau dv/dt = (v_leak - v) + R I`` with ``tau = dt / (1 - beta)``, ``R = tau / dt``,
``v_leak = 0``, ``v_reset = 0``. NIR fires on ``v > theta`` (strict); the two differ only when a
membrane lands exactly on the threshold. The static input image is fed at every time step
(direct-current input); the output is the spike count of the last LIF layer.

    python examples/nir_export.py                # ~60 s, writes runs/examples/snn.nir
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from polystep import PolyStepOptimizer, TrainConfig, train
from polystep.data import load_digits_splits, make_loaders
from polystep.nn import LIF, SpikingMLP

SMALL = os.environ.get("POLYSTEP_EXAMPLE_SMALL") == "1"
DT = 1.0  # one simulation step of the spiking MLP = dt in NIR's continuous-time equations


def to_nir(model: SpikingMLP, dt: float = DT):
    """NIR graph of a :class:`SpikingMLP` (``Linear``/``LIF`` pairs, ``beta < 1``)."""
    import nir

    linears = [m for m in model if isinstance(m, nn.Linear)]
    neurons = [m for m in model if isinstance(m, LIF)]
    nodes = {"input": nir.Input(input_type=np.array([linears[0].in_features]))}
    edges, previous = [], "input"
    for i, (linear, lif) in enumerate(zip(linears, neurons, strict=True)):
        if not lif.beta < 1:
            raise ValueError(f"LIF layer {i} has beta = 1 (no leak): export it as nir.IF instead")
        n = linear.out_features
        tau = dt / (1.0 - lif.beta)
        nodes[f"fc{i}"] = nir.Affine(
            weight=linear.weight.detach().cpu().numpy().copy(),
            bias=linear.bias.detach().cpu().numpy().copy(),
        )
        nodes[f"lif{i}"] = nir.LIF(
            tau=np.full(n, tau),
            r=np.full(n, tau / dt),
            v_leak=np.zeros(n),
            v_threshold=np.full(n, lif.threshold),
            v_reset=np.zeros(n),
        )
        edges += [(previous, f"fc{i}"), (f"fc{i}", f"lif{i}")]
        previous = f"lif{i}"
    nodes["output"] = nir.Output(output_type=np.array([linears[-1].out_features]))
    edges.append((previous, "output"))
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata={"num_steps": model.num_steps})


def chain(graph) -> list[str]:
    """Node names from input to output of a graph that is a single chain."""
    following = dict(graph.edges)
    order, name = [], "input"
    while name != "output":
        name = following[name]
        order.append(name)
    return order[:-1]


def from_nir(graph, num_steps: int, dt: float = DT) -> SpikingMLP:
    """Rebuild the :class:`SpikingMLP` from a graph written by :func:`to_nir`."""
    import nir

    nodes = [graph.nodes[name] for name in chain(graph)]
    affines = [n for n in nodes if isinstance(n, nir.Affine)]
    neurons = [n for n in nodes if isinstance(n, nir.LIF)]
    tau = float(neurons[0].tau.flat[0])
    sizes = (affines[0].weight.shape[1], *(a.weight.shape[0] for a in affines))
    model = SpikingMLP(
        sizes,
        num_steps=num_steps,
        beta=1.0 - dt / tau,
        threshold=float(neurons[0].v_threshold.flat[0]),
    )
    with torch.no_grad():
        linears = [m for m in model if isinstance(m, nn.Linear)]
        for linear, affine in zip(linears, affines, strict=True):
            linear.weight.copy_(torch.from_numpy(np.asarray(affine.weight)))
            linear.bias.copy_(torch.from_numpy(np.asarray(affine.bias)))
    return model


def simulate_nir(graph, x: np.ndarray, num_steps: int, dt: float = DT) -> np.ndarray:
    """Spike counts ``(B, out)`` of a chain graph from NIR's equations (forward Euler)."""
    import nir

    counts, state = None, {}
    for _ in range(num_steps):
        signal = x.astype(np.float64)
        for name in chain(graph):
            node = graph.nodes[name]
            if isinstance(node, nir.Affine):
                signal = signal @ np.asarray(node.weight, np.float64).T + node.bias
            elif isinstance(node, nir.LIF):
                v = state.get(name, np.zeros_like(signal))
                v = v + dt / node.tau * (node.v_leak - v + node.r * signal)
                spikes = v > node.v_threshold
                state[name] = np.where(spikes, node.v_reset, v)
                signal = spikes.astype(np.float64)
            else:
                raise ValueError(f"node {name}: {type(node).__name__} is not simulated here")
        counts = signal if counts is None else counts + signal
    return counts


def main(argv: list[str] | None = None) -> int:
    import nir

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0 if SMALL else 45.0)
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--num-steps", type=int, default=10, help="simulation length T")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/examples"))
    args = parser.parse_args(argv)

    splits = load_digits_splits(seed=args.seed)
    loaders = make_loaders(splits, 32, seed=args.seed, eval_batch_size=None, fast=True)
    torch.manual_seed(args.seed)
    model = SpikingMLP((64, args.hidden, 10), num_steps=args.num_steps)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)  # neurons fire at the start
    optimizer = PolyStepOptimizer(model, preset="snn", seed=args.seed)
    config = TrainConfig(epochs=1000, max_seconds=args.seconds, val_every=10, progress=False)
    train(model, loaders.train, nn.CrossEntropyLoss(), optimizer, config, val_loader=loaders.val)

    path = args.out / "snn.nir"
    path.parent.mkdir(parents=True, exist_ok=True)
    nir.write(path, to_nir(model))
    graph = nir.read(path)
    rebuilt = from_nir(graph, int(graph.metadata.get("num_steps", args.num_steps)))
    x, y = splits.test.tensors
    with torch.no_grad():
        counts, counts_back = model(x), rebuilt(x)
    same_weights = all(
        torch.equal(a, b) for a, b in zip(model.parameters(), rebuilt.parameters(), strict=True)
    )
    same_counts = torch.equal(counts, counts_back)
    simulated = simulate_nir(graph, x.numpy(), args.num_steps)
    agree = float((simulated.argmax(axis=1) == counts.argmax(dim=1).numpy()).mean())
    exact = float((simulated == counts.numpy()).all(axis=1).mean())
    accuracy = float((counts.argmax(dim=1) == y).float().mean())
    print(
        f"trained hard-LIF SNN 64-{args.hidden}-10, T={args.num_steps}: "
        f"{optimizer.iteration} PolyStep steps"
    )
    print(f"wrote {path} ({path.stat().st_size:,} bytes): nodes {list(graph.nodes)}")
    print(
        f"round trip: weights identical {same_weights}, test spike counts identical {same_counts}"
    )
    print(
        f"NIR equations simulated in numpy: same prediction on {agree:.2%} of test images, "
        f"identical spike counts on {exact:.2%}"
    )
    print(f"TEST accuracy of the exported network: {accuracy:.4f}")
    return 0 if same_weights and same_counts else 1


if __name__ == "__main__":
    raise SystemExit(main())
