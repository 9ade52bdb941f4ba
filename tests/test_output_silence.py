"""benchmarks/output_silence.py: the per-class figures that show a silent output neuron."""

import math

import pytest
import torch

from bench_scripts import load_script


def test_a_silent_output_neuron_loses_its_class_to_the_lowest_one():
    silence = load_script("output_silence")
    counts = torch.tensor([[3, 0, 0], [0, 0, 0], [0, 0, 2], [1, 0, 0]])  # class 1 never spikes
    labels = torch.tensor([0, 1, 2, 1])
    figures = silence.class_figures(counts, labels)
    assert figures["never_spikes"] == [False, True, False]
    assert figures["recall"] == [1.0, 0.0, 1.0]
    assert figures["predicted_share"] == [0.75, 0.0, 0.25]  # ties at 0 go to class 0
    assert figures["spiking_share"] == [0.5, 0.0, 0.25]
    assert figures["mean_count"] == [1.0, 0.0, 0.5]


def test_a_class_absent_from_the_labels_has_no_recall():
    silence = load_script("output_silence")
    figures = silence.class_figures(torch.tensor([[1, 0]]), torch.tensor([0]))
    assert figures["recall"][0] == 1.0 and math.isnan(figures["recall"][1])


def test_a_decaying_arm_without_its_target_is_refused_before_any_run(capsys):
    silence = load_script("output_silence")
    with pytest.raises(SystemExit) as exit_info:
        silence.main(["--arm", "decay_step"])
    assert exit_info.value.code == 2
    assert "needs --step-target" in capsys.readouterr().err
