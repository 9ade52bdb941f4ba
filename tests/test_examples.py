"""Every script in examples/ runs at a reduced size (POLYSTEP_EXAMPLE_SMALL=1) and reports.

The scripts run in this process (``runpy``) so torch is imported once; each one's ``main(argv)``
returns its exit status and prints its results, which are checked here.
"""

from __future__ import annotations

import runpy
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from polystep.data import write_idx

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load(name: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The example's module globals, read with the small-size switch on."""
    monkeypatch.setenv("POLYSTEP_EXAMPLE_SMALL", "1")
    return runpy.run_path(str(EXAMPLES / f"{name}.py"), run_name=f"example_{name}")


def run(
    name: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, *args: str
) -> str:
    """Run ``examples/name.py`` small; returns its output (status 0 required)."""
    status = load(name, monkeypatch)["main"]([*args])
    out = capsys.readouterr().out
    assert status == 0, out
    return out


def test_every_example_has_a_test() -> None:
    tested = {
        "quickstart_2d",
        "snn_mnist",
        "snntorch_inplace",
        "cartpole_int8",
        "maxsat_dimacs",
        "binary_net",
        "f1_direct",
        "oblique_tree",
        "nir_export",
    }
    assert {p.stem for p in EXAMPLES.glob("*.py")} == tested


def test_quickstart_2d(monkeypatch, capsys, tmp_path) -> None:
    out = run("quickstart_2d", monkeypatch, capsys, "--out", str(tmp_path))
    best = float(out.split("best value found: ")[1].split()[0])
    assert best < 1.0  # Ackley is ~7 where the particles start
    assert (tmp_path / "quickstart_2d.png").stat().st_size > 0


def fake_mnist(folder: Path, rng: np.random.Generator) -> Path:
    """Tiny MNIST-layout IDX files: class ``c`` lights up row block ``c`` of a 28x28 image."""
    folder.mkdir()
    for split, num in (("train", 600), ("t10k", 200)):
        labels = rng.integers(0, 10, num).astype(np.uint8)
        images = rng.integers(0, 60, (num, 28, 28)).astype(np.uint8)
        for i, c in enumerate(labels):
            images[i, 2 * c : 2 * c + 3] = 255
        write_idx(folder / f"{split}-images-idx3-ubyte.gz", images)
        write_idx(folder / f"{split}-labels-idx1-ubyte.gz", labels)
    return folder


def test_snn_mnist_on_idx_files(monkeypatch, capsys, tmp_path) -> None:
    data = fake_mnist(tmp_path / "mnist", np.random.default_rng(0))
    out = run("snn_mnist", monkeypatch, capsys, "--data", str(data), "--out", str(tmp_path))
    assert "TEST accuracy (200 images, scored once)" in out
    assert (tmp_path / "snn_mnist.png").exists()


def test_snn_mnist_says_so_when_data_is_missing(monkeypatch, capsys, tmp_path) -> None:
    main = load("snn_mnist", monkeypatch)["main"]
    assert main(["--data", str(tmp_path / "absent"), "--out", str(tmp_path)]) == 2
    out = capsys.readouterr().out
    assert "MNIST IDX files not found" in out and "Nothing was run" in out


@pytest.mark.slow
def test_snn_mnist_real_data(monkeypatch, capsys, tmp_path, shared_data) -> None:
    out = run(
        "snn_mnist",
        monkeypatch,
        capsys,
        "--data",
        str(shared_data / "mnist"),
        "--seconds",
        "20",
        "--out",
        str(tmp_path),
    )
    accuracy = float(out.split("scored once): ")[1].split()[0])
    assert accuracy > 0.2  # chance is 0.1


def test_snntorch_inplace(monkeypatch, capsys, tmp_path) -> None:
    pytest.importorskip("snntorch")
    out = run("snntorch_inplace", monkeypatch, capsys, "--out", str(tmp_path))
    line = out.split("run by snntorch: ")[1].split("\n")[0]
    after = float(line.split(" -> ")[1])
    ours = float(out.split("spiking MLP: ")[1].split()[0])
    assert after == ours  # snntorch's own loop scores the trained weights: the net was trained
    assert int(out.split(" PolyStep steps")[0].split()[-1]) >= 1


def test_cartpole_int8(monkeypatch, capsys, tmp_path) -> None:
    out = run("cartpole_int8", monkeypatch, capsys, "--out", str(tmp_path))
    assert "HELD-OUT return over 100 episodes" in out
    assert (tmp_path / "cartpole_int8.png").exists()


def test_maxsat_generated_instance_matches_rc2_bound(monkeypatch, capsys, tmp_path) -> None:
    pytest.importorskip("pysat")
    out = run("maxsat_dimacs", monkeypatch, capsys, "--out", str(tmp_path))
    gap = float(out.split("PolyStep gap ")[1].split()[0])
    assert gap >= 0  # RC2 is exact: PolyStep can match it, never beat it
    assert (tmp_path / "random-3sat-n40-m240.cnf").read_text().startswith(("c", "p cnf"))


@pytest.mark.slow
def test_maxsat_on_a_shared_instance(monkeypatch, capsys, tmp_path, shared_data) -> None:
    pytest.importorskip("pysat")
    instance = shared_data / "maxsat" / "satlib" / "uuf100-01.cnf"
    out = run(
        "maxsat_dimacs", monkeypatch, capsys, "--instance", str(instance), "--out", str(tmp_path)
    )
    assert "RC2 exact optimum: cost 1 " in out  # index.csv: optimum 1, proved with RC2


def test_binary_net_weights_get_no_gradient(monkeypatch, capsys, tmp_path) -> None:
    out = run("binary_net", monkeypatch, capsys, "--out", str(tmp_path))
    assert "max |d loss / d weight| per layer = [0.0, 0.0]" in out
    assert "PolyStep" in out and "straight-through" in out


def test_f1_loss_and_example(monkeypatch, capsys, tmp_path) -> None:
    module = load("f1_direct", monkeypatch)
    logits = torch.tensor([[0.0, 1.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0]])
    targets = torch.tensor([1, 0, 1, 0])  # tp 1, fp 1, fn 1: F1 = 2 / 4
    assert float(module["f1_loss"](logits, targets)) == pytest.approx(0.5)
    out = run("f1_direct", monkeypatch, capsys, "--out", str(tmp_path))
    assert out.count("TEST F1") == 2


def test_oblique_tree_routes_by_hyperplanes(monkeypatch, capsys, tmp_path) -> None:
    module = load("oblique_tree", monkeypatch)
    tree = module["ObliqueTree"](2, 2, 2)
    with torch.no_grad():
        tree.split.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]]))
        tree.split.bias.zero_()
    x = torch.tensor([[-1.0, -1.0], [-1.0, 1.0], [1.0, -1.0], [1.0, 1.0]])
    assert tree.leaf_index(x).tolist() == [0, 1, 2, 3]
    out = run("oblique_tree", monkeypatch, capsys, "--out", str(tmp_path))
    assert "oblique tree, PolyStep" in out and "CART" in out


def test_nir_round_trip(monkeypatch, capsys, tmp_path) -> None:
    nir = pytest.importorskip("nir")
    module = load("nir_export", monkeypatch)
    from polystep.nn import SpikingMLP

    torch.manual_seed(0)
    model = SpikingMLP((12, 16, 5), num_steps=6, beta=0.9, threshold=0.5)
    path = tmp_path / "model.nir"
    nir.write(path, module["to_nir"](model))
    graph = nir.read(path)
    rebuilt = module["from_nir"](graph, 6)
    x = torch.rand(40, 12) * 3
    with torch.no_grad():
        counts = model(x)
        assert counts.sum() > 0  # not two silent networks
        assert torch.equal(counts, rebuilt(x))
    assert rebuilt[1].beta == pytest.approx(0.9) and rebuilt[1].threshold == 0.5
    simulated = module["simulate_nir"](graph, x.numpy(), 6)
    assert (simulated == counts.numpy()).mean() > 0.95  # NIR fires on v > theta, ours v >= theta
    out = run("nir_export", monkeypatch, capsys, "--out", str(tmp_path))
    assert "weights identical True, test spike counts identical True" in out
