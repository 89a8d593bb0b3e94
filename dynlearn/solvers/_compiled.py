"""Fixed-step rollouts as plain tensor code, and torch.compile of them with an eager fallback.

A fixed-step solve through torchdiffeq runs its step loop, grid and
per-segment clock in Python on every call; :func:`fixed_rollout` writes the
same steps (one per segment of each series' own times) as a loop of
:func:`~dynlearn.solvers.fixed_step` calls, which torch.compile can unroll
into one graph. :class:`CompiledFunction` compiles a function once per input
signature and runs it eagerly, with one warning naming the reason, where
torch.compile is missing or fails.
"""

from __future__ import annotations

import types
import warnings
from typing import Any, Callable, Iterable

import torch

from ..exceptions import input_error
from ._fixed import FIXED_STEP_METHODS, fixed_step

# torch.compile modes accepted by CompiledFunction; "reduce-overhead" records CUDA graphs (GPU only).
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def fixed_rollout(
    method: str, f: Callable[[torch.Tensor], torch.Tensor], y0: torch.Tensor, times: torch.Tensor
) -> torch.Tensor:
    """States of ``dy/dt = f(y)`` at every series' own times, one fixed step per gap.

    The same steps as :func:`~dynlearn.solvers.solve_ode_irregular` takes
    with a fixed-step ``method``, ``autonomous=True`` and no ``step_size``
    (one step per segment), written as tensor operations only, so that
    torch.compile can trace the whole rollout.

    Parameters
    ----------
    method : {"euler", "midpoint", "rk4"}
        A name of :data:`FIXED_STEP_METHODS`.
    f : callable
        The autonomous vector field, ``y -> dy/dt`` on tensors of ``y0``'s shape.
    y0 : torch.Tensor of shape (batch, n_states)
        States at each series' first time.
    times : torch.Tensor of shape (batch, n_times)
        Each series' output times (any order; a repeated time keeps the state).

    Returns
    -------
    torch.Tensor of shape (batch, n_times, n_states)

    Examples
    --------
    >>> import torch
    >>> from dynlearn.solvers import fixed_rollout
    >>> y = fixed_rollout("rk4", lambda y: -y, torch.ones(1, 1), torch.tensor([[0.0, 0.5, 1.0]]))
    >>> round(float(y[0, -1, 0]), 4)  # two rk4 steps of 0.5; exp(-1) = 0.3679
    0.3682
    """
    if method not in FIXED_STEP_METHODS:
        raise input_error("method", f"one of {sorted(FIXED_STEP_METHODS)}", repr(method),
                          "Use solve_ode_irregular for other methods.")
    if times.dim() != 2 or times.shape[0] != y0.shape[0]:
        raise input_error("times", f"a tensor of shape (batch={y0.shape[0]}, n_times)", f"shape {tuple(times.shape)}",
                          "Give one row of times per initial state.")
    gaps = times.diff(dim=1).to(y0.dtype)
    states = [y0]
    for k in range(gaps.shape[1]):
        states.append(fixed_step(method, f, states[-1], gaps[:, k : k + 1]))
    return torch.stack(states, dim=1)


class CompiledFunction:
    """``function`` compiled by torch.compile, once per input signature, or eager where that fails.

    The signature is the shapes, dtypes and devices of the tensor arguments
    and whether gradients are recorded; each new one is compiled with
    ``dynamic=False`` (a graph specialised to it), which is what pays on
    small fixed-size minibatches. If ``torch.compile`` is missing or raises
    (no C++ compiler, an operation the compiler does not support, a platform
    it does not run on), one :class:`RuntimeWarning` says why and every
    later call runs ``function`` eagerly.

    Instances hold compiled code and are not meant to be pickled: keep them
    outside a model's saved state and rebuild them after loading.

    Parameters
    ----------
    function : callable
        Takes tensors, returns a tensor.
    mode : str, default="default"
        A torch.compile mode, one of :data:`COMPILE_MODES`.
    what : str, default="the function"
        Named in the fallback warning.
    parameters : callable, default=None
        Returns the tensors (weights) ``function`` differentiates besides its
        arguments. The first call of each signature then runs the backward
        pass once, so that a backward graph the compiler cannot build falls
        back too instead of failing in the caller's ``backward()``.

    Attributes
    ----------
    fell_back : bool
        Whether compiling failed and calls now run ``function`` eagerly.
    fallback_reason : str or None
        The error that made it fall back.
    n_compiled : int
        How many input signatures have a compiled graph.

    Examples
    --------
    >>> import torch
    >>> from dynlearn.solvers import CompiledFunction
    >>> double = CompiledFunction(lambda x: 2 * x, what="doubling")
    >>> double.fell_back
    False
    """

    def __init__(self, function: Callable[..., torch.Tensor], *, mode: str = "default", what: str = "the function",
                 parameters: Callable[[], Iterable[torch.Tensor]] | None = None):
        if mode not in COMPILE_MODES:
            raise input_error("mode", f"one of {list(COMPILE_MODES)}", repr(mode), "Pass 'default'.")
        self.function = function
        self.mode = mode
        self.what = what
        self.parameters = parameters
        self.fell_back = False
        self.fallback_reason: str | None = None
        self._compiled: dict[tuple, Callable[..., torch.Tensor]] = {}

    @property
    def n_compiled(self) -> int:
        """How many input signatures have a compiled graph."""
        return len(self._compiled)

    def __call__(self, *args: Any) -> torch.Tensor:
        if self.fell_back:
            return self.function(*args)
        key = _signature(args)
        compiled = self._compiled.get(key)
        if compiled is None:
            try:
                mode = None if self.mode == "default" else self.mode
                compiled = torch.compile(_own_code(self.function), dynamic=False, mode=mode)
            except Exception as error:  # torch.compile missing or refused on this platform
                return self._fall_back(error, args)
        first = key not in self._compiled
        try:
            result = compiled(*args)
            if first:
                self._compile_backward(result, args)
        except Exception as error:  # compiling happens at the first call: a compiler or tracing failure
            if not first:
                raise  # a graph that ran before does not fail for compiler reasons
            return self._fall_back(error, args)
        self._compiled[key] = compiled
        return result

    def _compile_backward(self, result: torch.Tensor, args: tuple) -> None:
        """Run the new graph's backward pass once, so that a backward the compiler cannot build fails here.

        Otherwise it would fail later, inside the caller's ``loss.backward()``,
        where no fallback can catch it. The gradients are discarded.
        """
        if not (torch.is_grad_enabled() and result.requires_grad):
            return
        inputs = [arg for arg in args if torch.is_tensor(arg) and arg.requires_grad]
        if self.parameters is not None:
            inputs += [p for p in self.parameters() if p.requires_grad]
        if inputs:
            torch.autograd.grad(result, inputs, torch.ones_like(result), retain_graph=True, allow_unused=True)

    def _fall_back(self, error: Exception, args: tuple) -> torch.Tensor:
        result = self.function(*args)  # an error of the function itself surfaces here, as it would uncompiled
        self.fell_back = True
        self._compiled.clear()
        reason = f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"
        self.fallback_reason = reason
        warnings.warn(
            f"torch.compile could not compile {self.what} ({reason}); running it without compiling. "
            "Set compile=False to silence this warning.",
            RuntimeWarning,
            stacklevel=3,
        )
        return result


def _own_code(function: Callable) -> Callable:
    """``function`` with a code object of its own.

    torch.compile keeps its graphs on the code object, and stops compiling
    (silently running eager) past a limit of graphs per code object: every
    rollout closure of every fitted module shares one code object, so a grid
    search would reach that limit within a few fits. A copy per signature
    gives each graph its own, freed with it.
    """
    if not isinstance(function, types.FunctionType):
        return function
    copy = types.FunctionType(
        function.__code__.replace(), function.__globals__, function.__name__, function.__defaults__,
        function.__closure__,
    )
    copy.__kwdefaults__ = function.__kwdefaults__
    return copy


def _signature(args: tuple) -> tuple:
    parts: list[Any] = [torch.is_grad_enabled()]
    for arg in args:
        if torch.is_tensor(arg):
            parts.append((tuple(arg.shape), arg.dtype, arg.device.type, arg.requires_grad))
        else:
            parts.append(type(arg).__name__)
    return tuple(parts)
