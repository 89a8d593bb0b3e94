"""Encoders that read the observations before a time and give the unobserved part of the state there."""

from __future__ import annotations

import torch
from torch import nn

from ..exceptions import input_error


class HistoryEncoder(nn.Module):
    """A GRU over the last observations of a series, read oldest first, mapped to initial hidden states.

    Each step reads the observed values (zero where missing), the observation
    mask, the time since the previous row and, for a system driven by known
    inputs (``n_inputs > 0``), the inputs at that row: what the unmeasured
    part of a driven system holds depends on what drove it, not only on what
    was measured. Rows that precede the series' start are skipped (the GRU
    state passes through unchanged), so short histories at the start of a
    series are read as they are.

    Parameters
    ----------
    n_features : int
        Observed features per row.
    out_dim : int
        Size of the inferred hidden state.
    hidden_size : int, default=32
        Width of the GRU state.
    n_inputs : int, default=0
        Known inputs per row read beside the observations (0: none).
    """

    def __init__(self, n_features: int, out_dim: int, hidden_size: int = 32, n_inputs: int = 0):
        super().__init__()
        self.n_inputs = n_inputs
        self.cell = nn.GRUCell(2 * n_features + 1 + n_inputs, hidden_size)
        self.readout = nn.Linear(hidden_size, out_dim)

    def forward(self, values: torch.Tensor, mask: torch.Tensor, gaps: torch.Tensor, present: torch.Tensor,
                inputs: torch.Tensor | None = None) -> torch.Tensor:
        """Hidden states ``(batch, out_dim)`` from histories ``(batch, length, ...)``.

        Parameters
        ----------
        values, mask : Tensor of shape (batch, length, n_features)
            Observed values (anything where ``mask`` is 0) and the mask.
        gaps : Tensor of shape (batch, length)
            Time since the previous row (0 on the first).
        present : Tensor of shape (batch, length)
            1 for rows of the series, 0 for slots before its start.
        inputs : Tensor of shape (batch, length, n_inputs), default=None
            The known inputs at each row; required when ``n_inputs > 0``,
            ignored otherwise.
        """
        n_inputs = getattr(self, "n_inputs", 0)  # encoders pickled before inputs were read have none
        if n_inputs and (inputs is None or inputs.shape[-1] != n_inputs):
            got = "None" if inputs is None else f"shape {tuple(inputs.shape)}"
            raise input_error("inputs", f"a tensor (batch, length, {n_inputs}) for an encoder of {n_inputs} input(s)",
                              got, "Pass the known inputs at every row of the history.")
        h = values.new_zeros(values.shape[0], self.cell.hidden_size)
        for k in range(values.shape[1]):
            parts = [values[:, k] * mask[:, k], mask[:, k], gaps[:, k : k + 1]]
            if n_inputs:
                parts.append(inputs[:, k])
            step = torch.cat(parts, dim=-1)
            keep = present[:, k : k + 1]
            h = keep * self.cell(step, h) + (1 - keep) * h
        return self.readout(h)
