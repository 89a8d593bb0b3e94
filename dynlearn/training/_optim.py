"""The optimiser's side of a training step: AdamW, zeroing, clipping and stepping the gradients.

On a small model these are a third of a step when taken through
``torch.optim``'s general code: ``zero_grad`` and ``step`` open profiler
ranges, run hook registries, regroup the tensors by device and dtype and
rebuild their lists, and torch's clip reads its coefficient back as a
tensor. Here a step of the fused AdamW that :func:`adamw` builds, with no
hooks, no gradient scaler and its state already made by a first
``step()``, calls the same fused kernel with the same arguments directly,
so the parameters, moments and step counts are the same bit for bit
(tests compare them with ``optimizer.step()``); anything else goes
through ``optimizer.step()`` and ``optimizer.zero_grad()``.
"""

from __future__ import annotations

import importlib
import math
import weakref
from typing import Any

import numpy as np
import torch
from torch import nn

# Device types with a fused AdamW kernel (the CPU's since torch 2.4; adamw falls back where one is missing).
_FUSED_DEVICES = ("cpu", "cuda")

# The kernel ``torch.optim.AdamW(fused=True).step()`` calls, where this torch has it.
_FUSED_ADAMW = getattr(torch, "_fused_adamw_", None)

# The module holding torch's global optimiser hook registries (``torch.optim`` does not name it as an attribute).
_TORCH_OPTIMIZER = importlib.import_module("torch.optim.optimizer")

# Group options under which that step is exactly one call of the kernel per device and dtype.
_PLAIN_GROUP = {"amsgrad": False, "maximize": False, "capturable": False, "differentiable": False}


def adamw(parameters: Any, lr: float, weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """AdamW over ``parameters`` (tensors or parameter groups), with torch's fused kernel where it applies.

    The fused kernel updates every parameter in one call per step instead
    of a handful of elementwise operations per tensor: on a small model
    the step takes a third of the time, and the iterates are the same to
    rounding. Parameters it cannot take (a device or dtype without a fused
    kernel, or a torch release without one on the CPU) get the plain
    AdamW, which computes the same update.

    Parameters
    ----------
    parameters : iterable of Tensor or of dict
        What ``torch.optim.AdamW`` accepts.
    lr : float
        Learning rate (a group's own ``lr`` takes precedence).
    weight_decay : float, default=0.0
        Decoupled weight decay (0: Adam).

    Returns
    -------
    torch.optim.AdamW

    Examples
    --------
    >>> import torch
    >>> from dynlearn.training import adamw
    >>> optimizer = adamw(torch.nn.Linear(2, 1).parameters(), lr=1e-3)
    >>> optimizer.defaults["lr"]
    0.001
    """
    # A group's parameters are read twice (here, then by torch): a generator among them is made a list first.
    groups = [_listed(g) if isinstance(g, dict) else g for g in parameters]
    tensors = [p for g in groups for p in (g["params"] if isinstance(g, dict) else [g])]
    if tensors and all(p.is_floating_point() and p.device.type in _FUSED_DEVICES for p in tensors):
        try:
            return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay, fused=True)
        except (RuntimeError, TypeError, ValueError):  # no fused kernel in this torch for these tensors
            pass
    return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)


def _listed(group: dict) -> dict:
    """``group`` with its parameters as a list (torch takes one tensor, a list or any iterable)."""
    params = group["params"]
    return {**group, "params": [params] if isinstance(params, torch.Tensor) else list(params)}


def stepped_parameters(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    """The parameters ``optimizer`` steps, in its groups' order: those a step zeroes and clips.

    Read from the groups' lists rather than by walking the module's
    submodules, which on a small model costs more than the norm.
    """
    return [p for group in optimizer.param_groups for p in group["params"]]


def zero_gradients(optimizer: torch.optim.Optimizer, parameters: list[torch.Tensor]) -> None:
    """``optimizer.zero_grad(set_to_none=True)``: set the gradients of ``parameters`` (its own) to None.

    An optimiser whose class or instance brings its own ``zero_grad`` is
    asked to zero them itself.
    """
    if type(optimizer).zero_grad is not torch.optim.Optimizer.zero_grad or "zero_grad" in vars(optimizer):
        optimizer.zero_grad(set_to_none=True)
        return
    for p in parameters:
        p.grad = None


def optimizer_step(optimizer: torch.optim.Optimizer) -> None:
    """``optimizer.step()``, calling the fused AdamW kernel directly where that is all the step would do."""
    calls = _fused_adamw_calls(optimizer)
    if calls is None:
        optimizer.step()
        return
    with torch.no_grad():
        for group, params, grads, exp_avgs, exp_avg_sqs, steps, ones in calls:
            beta1, beta2 = group["betas"]
            # With a list of tensors the step counts take one kernel; with the number 1 each takes its own, and a
            # cast of the number to the count's dtype (17.2 against 5.8 us for 12 counts, benchmarks/kernel_choices.py).
            torch._foreach_add_(steps, ones)
            _FUSED_ADAMW(params, grads, exp_avgs, exp_avg_sqs, [], steps, amsgrad=False, lr=group["lr"],
                         beta1=beta1, beta2=beta2, weight_decay=group["weight_decay"], eps=group["eps"],
                         maximize=False, grad_scale=None, found_inf=None)  # fmt: skip


# Per optimiser: what its groups looked like when their kernel arguments were last gathered, and those arguments.
_GATHERED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _fused_adamw_calls(optimizer: torch.optim.Optimizer) -> list[tuple] | None:
    """Each group's kernel arguments when ``optimizer.step()`` would be one fused AdamW call per group, else None.

    That is a ``torch.optim.AdamW(fused=True)`` whose ``step`` nobody has
    wrapped (an LR scheduler, a hook, a gradient scaler), with plain
    options, scalar rates, and state for every parameter with a gradient
    (its first ``step()`` makes it), all on one device and of one dtype.
    The parameters, moments and step counts are gathered once and kept
    while the groups, their options and the optimiser's state stay the
    same objects; the gradients are read every step.
    """
    if _FUSED_ADAMW is None or type(optimizer) is not torch.optim.AdamW or "step" in vars(optimizer):
        return None
    if getattr(optimizer, "grad_scale", None) is not None or getattr(optimizer, "found_inf", None) is not None:
        return None
    hooks = [
        getattr(optimizer, "_optimizer_step_pre_hooks", None),
        getattr(optimizer, "_optimizer_step_post_hooks", None),
        getattr(_TORCH_OPTIMIZER, "_global_optimizer_pre_hooks", None),
        getattr(_TORCH_OPTIMIZER, "_global_optimizer_post_hooks", None),
    ]
    if any(registry is None or len(registry) for registry in hooks):
        return None
    kept = _GATHERED.get(optimizer)
    if kept is None or not _unchanged(kept[0], optimizer):
        gathered = _gather(optimizer)
        if gathered is None:
            return None
        kept = (_signature(optimizer), gathered)
        _GATHERED[optimizer] = kept
    calls = []
    for group, params, exp_avgs, exp_avg_sqs, steps, unstarted, ones in kept[1]:
        if not all(_is_number(value) for value in (group["lr"], *group["betas"], group["weight_decay"], group["eps"])):
            return None  # a tensor rate: torch's step moves it where the kernel wants it
        if any(p.grad is not None for p in unstarted):  # torch's step makes its state first
            return None
        grads = [p.grad for p in params]
        if any(grad is None or grad.is_sparse for grad in grads):
            # Parameters without a gradient this step are left as they are, as torch's step leaves them.
            if any(grad is not None and grad.is_sparse for grad in grads):
                return None
            present = [i for i, grad in enumerate(grads) if grad is not None]
            params, grads, exp_avgs, exp_avg_sqs, steps, ones = (
                [items[i] for i in present] for items in (params, grads, exp_avgs, exp_avg_sqs, steps, ones))
        if params:
            calls.append((group, params, grads, exp_avgs, exp_avg_sqs, steps, ones))
    return calls


def _signature(optimizer: torch.optim.Optimizer) -> tuple:
    """What the gathered arguments depend on: the state and the groups (the objects themselves), options and sizes.

    The objects are held, not their ``id``: a state loaded into the
    optimiser is a new object, which could otherwise reuse a freed one's id.
    """
    groups = optimizer.param_groups
    return (optimizer.state, len(optimizer.state), groups,
            [(g, g["params"], len(g["params"]), tuple(g.get(k) for k in _OPTIONS)) for g in groups])


def _unchanged(signature: tuple, optimizer: torch.optim.Optimizer) -> bool:
    """Whether ``optimizer``'s state and groups are still those of ``signature``."""
    state, size, groups, per_group = signature
    if state is not optimizer.state or size != len(state) or groups is not optimizer.param_groups:
        return False
    if len(groups) != len(per_group):
        return False
    for group, (kept, params, n, options) in zip(groups, per_group):
        if group is not kept or group["params"] is not params or len(params) != n:
            return False
        if tuple(group.get(k) for k in _OPTIONS) != options:
            return False
    return True


# The group options the signature follows (the rates are read at each step).
_OPTIONS = ("fused", "decoupled_weight_decay", *_PLAIN_GROUP)


def _gather(optimizer: torch.optim.Optimizer) -> list[tuple] | None:
    """Per group: its parameters with state, their moments and step counts, those without state yet, and a one
    beside each count (what a step adds to it).

    None where the kernel does not apply: other options, complex
    parameters, or several devices or dtypes (the rates are checked at
    each step, since a schedule may set them).
    """
    gathered, kind = [], None
    for group in optimizer.param_groups:
        if not group.get("fused") or not group.get("decoupled_weight_decay", True):
            return None
        if any(group.get(option, True) != value for option, value in _PLAIN_GROUP.items()):
            return None
        arguments: tuple[list, ...] = ([], [], [], [], [], [])
        for p in group["params"]:
            if p.is_complex() or (kind is not None and (p.device, p.dtype) != kind):
                return None
            kind = (p.device, p.dtype)
            state = optimizer.state.get(p)
            if not state or "step" not in state:
                arguments[4].append(p)
                continue
            for found, tensor in zip(arguments, (p, state["exp_avg"], state["exp_avg_sq"], state["step"])):
                found.append(tensor)
            arguments[5].append(torch.ones_like(state["step"]))
        gathered.append((group, *arguments))
    return gathered


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def clip_gradients(parameters: list[torch.Tensor], max_norm: float) -> bool:
    """Scale the gradients to a total norm of at most ``max_norm``; False if any entry is not finite.

    The scaled gradients are ``torch.nn.utils.clip_grad_norm_``'s bit for
    bit: the coefficient ``max_norm / (norm + 1e-6)`` is formed on the host
    from the norm, in the norm's precision and in torch's order of
    operations, so the step reads one number from the device, not two.

    A gradient whose entries are all finite can still have a norm that
    overflows float32 (entries above about 1e19, which a stiff stretch of a
    solve produces in an otherwise healthy fit); its direction is then
    found after dividing by its largest entry, instead of reporting a
    divergence that did not happen.
    """
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return True
    norm = _total_norm(grads)
    value = float(norm)
    if math.isfinite(value):
        coefficient = _clip_coefficient(max_norm, value, norm.dtype)
        if coefficient is None:  # another precision: torch's own arithmetic, on the device
            coefficient = max_norm / (norm + 1e-6)
            if float(coefficient) >= 1.0:
                return True
        elif coefficient >= 1.0:  # the clip multiplies by the coefficient clamped at 1: nothing to do at 1
            return True
        if all(g.device == grads[0].device for g in grads):
            if not isinstance(coefficient, torch.Tensor) and grads[0].device.type == "cpu" and all(
                    g.dtype == grads[0].dtype for g in grads):
                # As a number, the coefficient is cast once per tensor, each in its own kernel; as a tensor of the
                # gradients' dtype (the same value: that cast), it is one kernel (18.2 against 5.6 us for 12
                # small tensors, one thread).
                coefficient = torch.tensor(coefficient, dtype=grads[0].dtype)
            torch._foreach_mul_(grads, coefficient)
        else:  # a model split across devices
            for g in grads:
                g.mul_(coefficient.to(g.device) if isinstance(coefficient, torch.Tensor) else coefficient)
        return True
    largest = torch.stack([g.detach().abs().max() for g in grads]).max()
    if not torch.isfinite(largest):
        return False
    # The norm overflowed, so it is far above max_norm: scale to exactly max_norm.
    for g in grads:
        g.div_(largest)
    scaled = _total_norm(grads)
    for g in grads:
        g.mul_(max_norm / scaled)
    return True


def _clip_coefficient(max_norm: float, norm: float, dtype: torch.dtype) -> float | None:
    """``max_norm / (norm + 1e-6)`` as torch forms it on a tensor norm of ``dtype``; None for other precisions.

    torch adds 1e-6 in the norm's precision, takes the reciprocal, and
    multiplies by ``max_norm`` (``Tensor.__rtruediv__``); each step is one
    IEEE rounding, which numpy's scalars of the same precision repeat.
    """
    if dtype == torch.float64:
        return 1.0 / (norm + 1e-6) * max_norm
    if dtype != torch.float32:
        return None
    single = np.float32
    return float(single(1.0) / (single(norm) + single(1e-6)) * single(max_norm))


def _total_norm(grads: list[torch.Tensor]) -> torch.Tensor:
    """``nn.utils.get_total_norm(grads)``, in one foreach call where the gradients share a device and dtype.

    The figure is the same (the norm of the per-tensor norms torch's
    foreach kernel returns); what goes is the Python that groups the
    tensors by device and dtype, which on a small model costs more than the
    norm itself. Mixed devices or dtypes, and tensor subclasses, go through
    torch's own function.
    """
    first = grads[0]
    if all(type(g) is torch.Tensor and g.device == first.device and g.dtype == first.dtype for g in grads):
        return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
    return nn.utils.get_total_norm(grads)
