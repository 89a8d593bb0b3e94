"""Encoders that read the observations before a time and give the unobserved part of the state there."""

from __future__ import annotations

import torch
from torch import nn


class HistoryEncoder(nn.Module):
    """A GRU over the last observations of a series, read oldest first, mapped to initial hidden states.

    Each step reads the observed values (zero where missing), the observation
    mask and the time since the previous row; rows that precede the series'
    start are skipped (the GRU state passes through unchanged), so short
    histories at the start of a series are read as they are.

    Parameters
    ----------
    n_features : int
        Observed features per row.
    out_dim : int
        Size of the inferred hidden state.
    hidden_size : int, default=32
        Width of the GRU state.
    """

    def __init__(self, n_features: int, out_dim: int, hidden_size: int = 32):
        super().__init__()
        self.cell = nn.GRUCell(2 * n_features + 1, hidden_size)
        self.readout = nn.Linear(hidden_size, out_dim)

    def forward(self, values: torch.Tensor, mask: torch.Tensor, gaps: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """Hidden states ``(batch, out_dim)`` from histories ``(batch, length, ...)``.

        Parameters
        ----------
        values, mask : Tensor of shape (batch, length, n_features)
            Observed values (anything where ``mask`` is 0) and the mask.
        gaps : Tensor of shape (batch, length)
            Time since the previous row (0 on the first).
        present : Tensor of shape (batch, length)
            1 for rows of the series, 0 for slots before its start.
        """
        h = values.new_zeros(values.shape[0], self.cell.hidden_size)
        for k in range(values.shape[1]):
            step = torch.cat([values[:, k] * mask[:, k], mask[:, k], gaps[:, k : k + 1]], dim=-1)
            keep = present[:, k : k + 1]
            h = keep * self.cell(step, h) + (1 - keep) * h
        return self.readout(h)
