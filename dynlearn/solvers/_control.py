"""Known input signals u(t) read inside a solve on the per-series segment clock."""

from __future__ import annotations

import torch
from torch import nn

# How a control path is read between its knots (its observation times).
CONTROL_INTERPOLATIONS = ("previous", "linear", "cubic")


class ControlPath(nn.Module):
    """A batch of input signals, one per series, as piecewise polynomials between their knots.

    Series ``b`` holds ``values[b, k]`` at ``times[b, k]``, the same times a
    solve of :func:`~dynlearn.solvers.solve_ode_irregular` reports it at.
    On segment ``k`` (from ``times[b, k]`` to ``times[b, k+1]``) the signal
    is a polynomial of the fraction ``φ ∈ [0, 1]`` of the segment covered:

    - ``"previous"``: ``values[b, k]`` (zero-order hold);
    - ``"linear"``: the straight line between the two knots;
    - ``"cubic"``: the Hermite cubic whose slopes are backward differences
      (at the segment start the slope of the segment before it, at its end
      the segment's own secant), so the signal on a segment depends on no
      knot after its end, and has a continuous first derivative.

    A segment integrated backwards (negative gap) holds its earlier knot's
    value under ``"previous"`` and is read linearly under ``"cubic"``.

    None of them reads a knot after the segment's end: a solve up to time
    ``τ`` depends on the inputs up to ``τ`` only.

    The segment clock evaluates the path with the segment index it is on,
    never by searching times, so the value at a knot is never confused
    between the two segments that meet there.

    Parameters
    ----------
    times : Tensor of shape (batch, n_times)
        Knot times of each series (non-decreasing or non-increasing; zero
        gaps hold the signal).
    values : Tensor of shape (batch, n_times, n_inputs)
        The signal at the knots.
    interpolation : {"previous", "linear", "cubic"}
    lead : tuple of Tensor, optional
        ``(gap, value)`` of the knot before the first one, per series
        (``(batch,)`` and ``(batch, n_inputs)``; a zero gap means none):
        the cubic's first backward difference. Without it the first segment
        is read linearly.
    """

    def __init__(self, times: torch.Tensor, values: torch.Tensor, interpolation: str = "previous",
                 lead: tuple[torch.Tensor, torch.Tensor] | None = None):
        super().__init__()
        if interpolation not in CONTROL_INTERPOLATIONS:
            raise ValueError(
                f"interpolation: expected one of {list(CONTROL_INTERPOLATIONS)}; got {interpolation!r}. "
                "Pick one of them."
            )
        if values.dim() != 3 or values.shape[:2] != times.shape:
            raise ValueError(
                f"values: expected shape (batch, n_times, n_inputs) matching times {tuple(times.shape)}; got "
                f"{tuple(values.shape)}. Give the signal at every knot of every series."
            )
        self.interpolation = interpolation
        self.register_buffer("coefficients", _coefficients(times, values, interpolation, lead), persistent=False)
        self.register_buffer("times", times.to(values.dtype).contiguous(), persistent=False)
        self.register_buffer("gaps", (times[:, 1:] - times[:, :-1]).to(values.dtype), persistent=False)

    @property
    def n_inputs(self) -> int:
        return self.coefficients.shape[-1]

    def on_segment(self, k: torch.Tensor, fraction: torch.Tensor) -> torch.Tensor:
        """The signal ``(batch, n_inputs)`` on segment ``k`` (a one-element index) at ``fraction`` of it."""
        return self.on_segments(k.reshape(1), fraction.reshape(1))[0]

    def on_segments(self, k: torch.Tensor, fraction: torch.Tensor) -> torch.Tensor:
        """The signal ``(n, batch, n_inputs)`` on segments ``k`` ``(n,)`` at ``fraction`` ``(n,)`` of each (what
        :meth:`on_segment` reads, for all the stages of a solver step in one call)."""
        c = self.coefficients.index_select(1, k).transpose(0, 1)  # (n, batch, 4, n_inputs)
        phi = fraction.clamp(0, 1).to(c.dtype).reshape(-1, 1, 1)
        return c[:, :, 0] + phi * (c[:, :, 1] + phi * (c[:, :, 2] + phi * c[:, :, 3]))

    def at(self, t: torch.Tensor, tolerance: float = 0.0) -> torch.Tensor:
        """The signal ``(batch, n_inputs)`` at time ``t`` (a scalar or one time per series).

        For solves on a clock shared by every series (not the segment clock),
        where each series' segment must be found from the time. A time within
        ``tolerance`` before a knot counts as reached, so a solver step that
        starts at a knot up to round-off reads the segment after it. Before
        the first knot the signal is the first value; after the last one it
        is the last segment's reading at its end (the last value, except that
        ``"previous"`` holds the one before: repeat the last knot to hold
        it). Needs non-decreasing knot times.
        """
        return self._read(t.reshape(-1, 1).expand(self.coefficients.shape[0], 1), tolerance)[:, 0]

    def at_each(self, times: torch.Tensor, tolerance: float = 0.0) -> torch.Tensor:
        """The signal ``(n, batch, n_inputs)`` of every series at each of ``times`` ``(n,)``, read as :meth:`at`
        reads it (one call for all the step starts of a fixed-step solve)."""
        return self._read(times.reshape(1, -1).expand(self.coefficients.shape[0], -1), tolerance).transpose(0, 1)

    def _read(self, t: torch.Tensor, tolerance: float) -> torch.Tensor:
        """The signal ``(batch, m, n_inputs)`` at times ``t`` ``(batch, m)`` (see :meth:`at`)."""
        times = self.times
        batch, n_segments = self.coefficients.shape[:2]
        t = t.to(times.dtype).contiguous()
        k = (torch.searchsorted(times, t + tolerance, side="right") - 1).clamp(0, n_segments - 1)
        left = times.gather(1, k)
        width = times.gather(1, k + 1) - left
        fraction = torch.where(width > 0, (t - left) / torch.where(width > 0, width, torch.ones_like(width)),
                               torch.zeros_like(width)).clamp(0, 1).unsqueeze(-1)
        c = self.coefficients[torch.arange(batch, device=k.device)[:, None], k]  # (batch, m, 4, n_inputs)
        return c[..., 0, :] + fraction * (c[..., 1, :] + fraction * (c[..., 2, :] + fraction * c[..., 3, :]))

    def derivative(self) -> "ControlPath":
        """The path's time derivative ``dX/dt`` as a path on the same knots (what a controlled differential
        equation ``dz = f(z) dX`` integrates against).

        On segment ``k`` it is the derivative of the segment's polynomial in
        ``φ`` divided by the segment's gap: a quadratic for ``"cubic"``, the
        secant slope for ``"linear"``, zero for ``"previous"`` (a held signal
        changes only at knots, where it has no derivative). A zero gap
        (padding, a repeated time) has derivative zero. It reads the same
        knots as the path, so it is as causal.
        """
        c = self.coefficients
        steps = c.new_tensor([1.0, 2.0, 3.0]).reshape(1, 1, 3, 1)
        in_fraction = torch.cat([c[:, :, 1:] * steps, torch.zeros_like(c[:, :, :1])], dim=2)
        gaps = self.gaps[:, :, None, None]
        per_time = torch.where(gaps != 0, in_fraction / torch.where(gaps != 0, gaps, torch.ones_like(gaps)), 0.0)
        return _from_coefficients(per_time, self.times, self.interpolation)


def _from_coefficients(coefficients: torch.Tensor, times: torch.Tensor, interpolation: str) -> ControlPath:
    """A path from its power-basis coefficients ``(batch, n_segments, 4, n_inputs)`` on knots ``(batch, n_times)``."""
    path = ControlPath.__new__(ControlPath)
    nn.Module.__init__(path)
    path.interpolation = interpolation
    path.register_buffer("coefficients", coefficients, persistent=False)
    path.register_buffer("times", times, persistent=False)
    path.register_buffer("gaps", times[:, 1:] - times[:, :-1], persistent=False)
    return path


def _coefficients(times: torch.Tensor, values: torch.Tensor, interpolation: str,
                  lead: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
    """Power-basis coefficients in the segment fraction, ``(batch, n_segments, 4, n_inputs)``."""
    start = values[:, :-1]
    rise = values[:, 1:] - start
    zero = torch.zeros_like(start)
    gaps = (times[:, 1:] - times[:, :-1]).to(values.dtype)
    # A segment integrated backwards (negative gap) runs from its later knot to its earlier one: the value
    # held over it is the earlier knot's, and the cubic, whose slopes look back in time, is read linearly.
    backward = (gaps < 0)[..., None]
    if interpolation == "previous":
        held = torch.where(backward, values[:, 1:], start)
        return torch.stack([held, zero, zero, zero], dim=2)
    if interpolation == "linear":
        return torch.stack([start, rise, zero, zero], dim=2)
    # Slope at each segment's start, in units of the segment: the previous segment's secant scaled to this
    # one's length (backward difference); the first segment uses the lead knot, else its own secant.
    before_rise = torch.cat([_lead_rise(values, lead), rise[:, :-1]], dim=1)
    before_gap = torch.cat([_lead_gap(times, values, lead), gaps[:, :-1]], dim=1)
    ratio = torch.where(before_gap != 0, gaps / torch.where(before_gap != 0, before_gap, torch.ones_like(gaps)),
                        torch.zeros_like(gaps))
    slope = torch.where((before_gap != 0)[..., None] & ~backward, before_rise * ratio[..., None], rise)
    return torch.stack([start, slope, 2 * rise - 2 * slope, slope - rise], dim=2)


def _lead_rise(values: torch.Tensor, lead: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
    if lead is None:
        return torch.zeros_like(values[:, :1])
    return (values[:, 0] - lead[1].to(values.dtype))[:, None]


def _lead_gap(times: torch.Tensor, values: torch.Tensor, lead: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
    if lead is None:
        return torch.zeros_like(times[:, :1], dtype=values.dtype)
    return lead[0].to(values.dtype).reshape(-1, 1)
