"""The one interface of a network that fuses and/or segments (:class:`Network`).

Inference (:func:`nslfcore.inference.run`), evaluation (:mod:`nslfcore.evaluation`) and model files
(:func:`nslfcore.model_store.save_model` / :func:`~nslfcore.model_store.load_model`) use only this;
they never ask which class a network is. Implemented by :class:`nslfcore.models.NSLF` (fuses and
segments), the networks of :mod:`nslfcore.segmentation_baselines` (segment only) and
:class:`nslfcore.fusion_baselines.ClassicalFusion` (fuses only).

Tensors are ``(B, C, D, H, W)`` with spatial axes ``(z, y, x)``; inputs are the four modalities in
``nslfcore.MODALITIES`` order, normalised to ``[0, 1]``.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch

from nslfcore.config import SegmentationOutput


@runtime_checkable
class Network(Protocol):
    """A ``torch.nn.Module`` that fuses and/or segments ``(B, 4, D, H, W)`` inputs.

    Attributes:
        fuses: :meth:`predict` returns a fused volume.
        segments: :meth:`predict` returns segmentation logits.
        segmentation_output: what those logits are: ``"classes"`` (background, NCR, ED, ET) or
            ``"regions"`` (WT, TC, ET); :mod:`nslfcore.models.outputs` turns them into probabilities and labels.
        sequential: :meth:`predict` has a ``sequential=True`` pass (one modality at a time: the
            same result with less memory); without it ``sequential`` is ignored.

    Example:
        >>> from nslfcore.config import PRESETS
        >>> from nslfcore.models import NSLF
        >>> net = NSLF(PRESETS["compact"]).eval()
        >>> isinstance(net, Network), net.fuses, net.segments
        (True, True, True)
        >>> fused, logits = net.predict(torch.rand(1, 4, 16, 16, 16))
        >>> tuple(fused.shape), tuple(logits.shape)
        ((1, 1, 16, 16, 16), (1, 4, 16, 16, 16))
    """

    fuses: bool
    segments: bool
    sequential: bool

    @property
    def segmentation_output(self) -> SegmentationOutput: ...

    def predict(
        self, x: torch.Tensor, segment: bool = True, sequential: bool = False, present: torch.Tensor | None = None
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """``(fused (B, 1, D, H, W) or None, logits (B, C, D, H, W) or None)`` for ``x`` ``(B, 4, D, H, W)``.

        ``fused`` is ``None`` unless the network fuses; ``logits`` may be ``None`` when ``segment``
        is false (a network may return them anyway when they cost nothing extra). ``present``:
        ``(B, 4)`` bool, the modalities each case has; an absent one is an all-zero channel of ``x``
        (``None``: all four). Inference passes it only when a sequence is missing.
        """
        ...

    def inference_bytes_per_voxel(self, sequential: bool = False) -> int:
        """Peak float32 activation memory of one whole-volume :meth:`predict` per (padded) voxel, in bytes."""
        ...

    def checkpoint_fields(self) -> dict[str, Any]:
        """What a model file stores besides the weights to rebuild this network (``kind`` and its description)."""
        ...

    # The torch.nn.Module methods inference and model files call.
    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]: ...

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any: ...

    def to(self, *args: Any, **kwargs: Any) -> Any: ...

    def eval(self) -> Any: ...
