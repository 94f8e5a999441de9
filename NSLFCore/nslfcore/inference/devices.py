"""Which torch device to run on: ``"auto"``, ``"cpu"`` or ``"cuda[:N]"``, checked with one-sentence errors."""

from __future__ import annotations

import torch


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> ``cuda`` when available, else ``cpu``; ``"cuda"`` -> ``cuda:0``."""
    if str(device) == "auto":
        return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"Unknown device {device!r}; use 'auto', 'cpu' or 'cuda[:N]'.") from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"Device {device} was asked for but CUDA is not available; use 'cpu' or 'auto'.")
        index = resolved.index or 0
        if index >= torch.cuda.device_count():
            raise ValueError(f"Device {device} does not exist ({torch.cuda.device_count()} CUDA devices); use 'cuda:0'.")
        return torch.device("cuda", index)
    if resolved.type != "cpu":
        raise ValueError(f"Unsupported device {device!r}; use 'auto', 'cpu' or 'cuda[:N]'.")
    return resolved
