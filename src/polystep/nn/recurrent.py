"""A vmap-safe LSTM and the LSTM forecaster of the ETTh1 task.

``torch.nn.LSTM`` runs one fused kernel over flat weights, which ``torch.vmap`` cannot batch over
per-candidate weights. :class:`LSTM` writes the same recurrence out with plain matmuls and a
Python loop over time, under the same parameter names (``weight_ih_l0``, ``weight_hh_l0``,
``bias_ih_l0``, ``bias_hh_l0``) and gate order (input, forget, cell, output), so a
``torch.nn.LSTM`` state dict loads into it unchanged and both give the same outputs.

``hard_gates=True`` replaces the sigmoid of the three gates by a Heaviside step ``1[a > 0]``:
the gates become binary and their weights get zero gradient almost everywhere.

:func:`lstm_forecaster` is an ``nn.Sequential`` of :class:`LastHidden` (the LSTM's final hidden
state) and a ``Linear`` head, so the layered evaluator runs the head's candidates sparsely and
the LSTM's through ``vmap`` of that one layer.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from polystep.evaluate.traits import BATCHWISE
from polystep.validation import check_positive_int


class LSTM(nn.Module):
    """Single-layer, batch-first LSTM with explicit gates (vmap-safe).

    Per step: ``a = x_t W_ihᵀ + b_ih + h W_hhᵀ + b_hh`` split into ``(i, f, g, o)``;
    ``c ← σ(f)·c + σ(i)·tanh(g)``, ``h ← σ(o)·tanh(c)`` (σ is ``1[· > 0]`` with hard gates).

    Args:
        input_size: features per time step.
        hidden_size: hidden units ``H``.
        hard_gates: binary (Heaviside) gates instead of sigmoid ones.

    Shapes: ``x (B, T, input_size)`` -> ``out (B, T, H)``, ``(h, c)`` each ``(1, B, H)`` (as
    ``torch.nn.LSTM(batch_first=True)``). ``state`` is an optional initial ``(h, c)``.
    """

    def __init__(self, input_size: int, hidden_size: int, *, hard_gates: bool = False) -> None:
        super().__init__()
        check_positive_int("input_size", input_size)
        check_positive_int("hidden_size", hidden_size)
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.hard_gates = bool(hard_gates)
        self.weight_ih_l0 = nn.Parameter(torch.empty(4 * hidden_size, input_size))
        self.weight_hh_l0 = nn.Parameter(torch.empty(4 * hidden_size, hidden_size))
        self.bias_ih_l0 = nn.Parameter(torch.empty(4 * hidden_size))
        self.bias_hh_l0 = nn.Parameter(torch.empty(4 * hidden_size))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """``U(-1/sqrt(H), 1/sqrt(H))`` for every parameter, as ``torch.nn.LSTM``."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def gate(self, a: torch.Tensor) -> torch.Tensor:
        """Gate activation: ``sigmoid(a)``, or ``1[a > 0]`` with hard gates."""
        return (a > 0).to(a.dtype) if self.hard_gates else torch.sigmoid(a)

    def forward(
        self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        if x.ndim != 3 or x.shape[-1] != self.input_size:
            raise ValueError(f"x must be (batch, time, {self.input_size}), got {tuple(x.shape)}")
        out, h, c = self.run(x, state, keep_outputs=True)
        return out, (h.unsqueeze(0), c.unsqueeze(0))  # type: ignore[return-value]

    def run(
        self,
        x: torch.Tensor,
        state: tuple[torch.Tensor, torch.Tensor] | None = None,
        *,
        keep_outputs: bool = False,
    ) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
        """The recurrence on ``x (B, T, F)``: ``(out (B, T, H) or None, h (B, H), c (B, H))``."""
        batch, steps = x.shape[0], x.shape[1]
        if state is None:
            h = x.new_zeros(batch, self.hidden_size)
            c = x.new_zeros(batch, self.hidden_size)
        else:
            h, c = state[0].reshape(batch, -1), state[1].reshape(batch, -1)
        # the input projection of every step at once; only the recurrent matmul stays in the loop
        drive = x @ self.weight_ih_l0.T + (self.bias_ih_l0 + self.bias_hh_l0)
        outputs = []
        for t in range(steps):
            a = drive[:, t] + h @ self.weight_hh_l0.T
            i, f, g, o = a.chunk(4, dim=-1)
            c = self.gate(f) * c + self.gate(i) * torch.tanh(g)
            h = self.gate(o) * torch.tanh(c)
            if keep_outputs:
                outputs.append(h)
        return (torch.stack(outputs, dim=1) if keep_outputs else None), h, c

    def extra_repr(self) -> str:
        gates = "hard" if self.hard_gates else "sigmoid"
        return f"{self.input_size}, {self.hidden_size}, gates={gates}"


class LastHidden(LSTM):
    """:class:`LSTM` that returns only the final hidden state: ``(B, T[, F]) -> (B, H)``.

    A 2-D input ``(B, T)`` is a univariate series (``F = 1``). Each sample is processed on its
    own, so the layered evaluator may treat it as one batch-wise layer.
    """

    polystep_traits = BATCHWISE

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        if x.ndim == 2:
            x = x.unsqueeze(-1)
        if x.ndim != 3 or x.shape[-1] != self.input_size:
            raise ValueError(
                f"x must be (batch, time) or (batch, time, {self.input_size}), got {tuple(x.shape)}"
            )
        return self.run(x)[1]


def lstm_forecaster(
    horizon: int = 96, *, hidden_size: int = 64, input_size: int = 1, hard_gates: bool = False
) -> nn.Sequential:
    """``LastHidden(input_size → hidden_size) → Linear(hidden_size → horizon)``.

    Direct multi-step forecast: a lookback window ``(B, T)`` (or ``(B, T, input_size)``) gives
    the next ``horizon`` values ``(B, horizon)``. 23,392 parameters at the defaults.
    """
    check_positive_int("horizon", horizon)
    return nn.Sequential(
        LastHidden(input_size, hidden_size, hard_gates=hard_gates),
        nn.Linear(hidden_size, horizon),
    )
