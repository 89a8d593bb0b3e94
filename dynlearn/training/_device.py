"""Resolving ``device`` and ``dtype`` hyperparameters."""

from __future__ import annotations

import torch

from ..exceptions import input_error

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` (a GPU when one is present), ``"cpu"``, ``"cuda"`` or ``"cuda:i"``."""
    if isinstance(device, torch.device):
        device = str(device)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not isinstance(device, str) or not (device == "cpu" or device == "cuda" or device.startswith("cuda:")):
        raise input_error("device", "'auto', 'cpu', 'cuda' or 'cuda:<index>'", repr(device), "Pick one of those.")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise input_error(
                "device",
                "a device this machine has",
                f"{device!r}, but torch sees no CUDA GPU",
                "Use device='cpu' or device='auto'.",
            )
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise input_error(
                "device",
                f"a GPU index below {torch.cuda.device_count()}",
                repr(device),
                "Pick an existing GPU.",
            )
    return torch.device(device)


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    if dtype not in DTYPES:
        raise input_error("dtype", f"one of {sorted(DTYPES)}", repr(dtype), "Use 'float32' (fast) or 'float64'.")
    return DTYPES[dtype]
