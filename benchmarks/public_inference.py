"""A faithful re-statement of the public code's inference procedure (github ImZhangyYing/NLSF, ``segnet_test.py``).

Read there, re-stated here on our networks (same weights), never copied:

* the input is the whole normalised 4-modality volume, no crop to the brain;
* windows of 160 x 160 x 64 voxels (x, y, z) = (64, 160, 160) (z, y, x), stride 32 in-plane and 16
  in depth, ``ceil((size - window) / stride) + 1`` positions per axis with the last window moved
  back inside the volume (4 x 4 x 7 = 112 windows on 240 x 240 x 155);
* per window: four separate CU-Net calls (one per modality), the fusion decoder, the fused window
  ``sum_i w_i x_i``, the segmentation decoder, a softmax;
* overlapping windows are averaged with uniform weights (sum and count), then argmax;
* float32 throughout, ``torch.no_grad``, default (contiguous) memory format, batch 1.

Per window this is :meth:`nslfcore.models.NSLF.fuse_and_segment_sequential` (a per-modality
CU-Net run as its four single U-Nets, a shared one called once per modality: what the public code
does), in float32 with the default memory format.

Arrays are ``(z, y, x)``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import numpy as np
import torch

from nslfcore.models import NSLF

#: The public window (z, y, x) and strides (z, y, x).
WINDOW = (64, 160, 160)
STRIDES = (16, 32, 32)


def window_starts(size: int, window: int, stride: int) -> list[int]:
    """Start indices along one axis: ``min(stride * i, size - window)`` for ``i < ceil((size - window) / stride) + 1``."""
    if size <= window:
        return [0]
    count = math.ceil((size - window) / stride) + 1
    return [min(stride * i, size - window) for i in range(count)]


class PublicProcedure:
    """``__call__(image (4, z, y, x) float32) -> (fused (z, y, x), labels (z, y, x) internal classes)``.

    Works on its own copy of ``model`` (on ``device``, default memory format), so whatever
    ``nslfcore.inference.run`` does to the model (channels-last-3d) does not leak into it.
    """

    def __init__(self, model: NSLF, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.model = copy.deepcopy(model).eval().to(self.device, memory_format=torch.contiguous_format)
        self.unets = self.model.cunet.split_modalities()

    def _window(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Fused ``(1, 1, ...)`` and probabilities ``(1, 4, ...)`` of one ``(1, 4, ...)`` window, the public way."""
        fusion, logits = self.model.fuse_and_segment_sequential(x, True, self.unets)  # four separate CU-Net calls
        return fusion.fused, torch.softmax(logits, dim=1)

    def __call__(self, image: np.ndarray, progress: Callable[[int, int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
        depth, height, width = image.shape[1:]
        starts = [window_starts(s, w, st) for s, w, st in zip((depth, height, width), WINDOW, STRIDES)]
        score = np.zeros((4, depth, height, width), np.float32)
        fused_sum = np.zeros((depth, height, width), np.float32)
        count = np.zeros((depth, height, width), np.float32)
        volume = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
        total = len(starts[0]) * len(starts[1]) * len(starts[2])
        done = 0
        with torch.no_grad():
            for x0 in starts[2]:
                for y0 in starts[1]:
                    for z0 in starts[0]:
                        box = (slice(z0, z0 + WINDOW[0]), slice(y0, y0 + WINDOW[1]), slice(x0, x0 + WINDOW[2]))
                        fused, probs = self._window(volume[(slice(None), *box)][None].to(self.device))
                        score[(slice(None), *box)] += probs[0].cpu().numpy()
                        fused_sum[box] += fused[0, 0].cpu().numpy()
                        count[box] += 1
                        done += 1
                        if progress is not None:
                            progress(done, total)
        return fused_sum / count, (score / count[None]).argmax(axis=0).astype(np.uint8)
