"""Draw NSLFSlicer.png (128 x 128): four modality quarter-discs fused into a brain with a tumour.

Run once with any Python that has numpy and Pillow (e.g. the checkout's .venv); not a runtime need.
"""

from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 128
y, x = np.mgrid[0:SIZE, 0:SIZE] + 0.5
cx = cy = SIZE / 2
r = np.hypot(x - cx, y - cy)
angle = np.arctan2(y - cy, x - cx)
rgba = np.zeros((SIZE, SIZE, 4), dtype=float)
quarters = [(0.35, 0.55, 0.95), (0.95, 0.55, 0.25), (0.45, 0.85, 0.55), (0.85, 0.45, 0.85)]
brain = ((x - cx) / 54) ** 2 + ((y - cy) / 46) ** 2 <= 1
quarter = ((angle + np.pi) // (np.pi / 2)).astype(int) % 4
blend = np.clip(1 - r / 54, 0, 1)[..., None]
colour = np.array(quarters)[quarter] * (1 - blend) + np.array([0.92, 0.9, 0.86]) * blend
rgba[..., :3] = colour
rgba[..., 3] = brain
edema = ((x - 80) / 20) ** 2 + ((y - 52) / 18) ** 2 <= 1
core = ((x - 80) / 10) ** 2 + ((y - 52) / 9) ** 2 <= 1
rgba[edema, :3] = (0.17, 0.63, 0.17)
rgba[core, :3] = (1.0, 0.78, 0.08)
rgba[((x - 80) / 5) ** 2 + ((y - 52) / 4.5) ** 2 <= 1, :3] = (0.84, 0.15, 0.16)
Image.fromarray((rgba * 255).astype(np.uint8), "RGBA").save(Path(__file__).with_name("NSLFSlicer.png"))
