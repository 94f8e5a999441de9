"""Make docs/phantom.png: one axial slice through the tumour of each modality, and the labels, for three cases.

Run from the repository root: ``python NSLFCore/docs/make_phantom_figure.py [--tiny] [--seed S] [--out PATH]``.
Needs matplotlib (not a dependency of nslfcore) and, without ``--tiny``, ``nslfcore[phantom]``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402

from nslfcore import MODALITIES  # noqa: E402
from nslfcore.data.phantom import generate_case, generate_tiny_case  # noqa: E402

TITLES = {"t1": "T1", "t1ce": "T1ce", "t2": "T2", "flair": "FLAIR"}
# internal labels: 1 NCR (red), 2 ED (green), 3 ET (yellow) -- the usual BraTS overlay colours
LABEL_COLOURS = ListedColormap([(0, 0, 0, 0), (0.9, 0.1, 0.1, 0.6), (0.1, 0.8, 0.1, 0.45), (1.0, 0.9, 0.0, 0.7)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cases", type=int, nargs="+", default=[0, 1, 2], help="case indices")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("phantom.png"))
    args = parser.parse_args()
    fig, axes = plt.subplots(len(args.cases), 5, figsize=(15, 3.2 * len(args.cases)), squeeze=False)
    for row, index in enumerate(args.cases):
        case = generate_tiny_case(args.seed, index=index) if args.tiny else generate_case(args.seed, index=index)
        assert case.label is not None
        z = int(np.argmax((case.label > 0).sum(axis=(1, 2))))  # axial slice (z) with the most tumour
        for col, modality in enumerate(MODALITIES):
            image = case.images[modality][z]
            # radiological display: patient left on the image right; anterior up (array row j=0 is anterior)
            axes[row, col].imshow(image[:, ::-1], cmap="gray", vmin=0, vmax=np.percentile(image[image > 0], 99.5))
            axes[row, col].set_title(f"{case.name} {TITLES[modality]} (z={z})", fontsize=9)
        axes[row, 4].imshow(case.images["flair"][z][:, ::-1], cmap="gray", vmin=0,
                            vmax=np.percentile(case.images["flair"][z][case.images["flair"][z] > 0], 99.5))  # fmt: skip
        axes[row, 4].imshow(case.label[z][:, ::-1], cmap=LABEL_COLOURS, vmin=0, vmax=3, interpolation="nearest")
        axes[row, 4].set_title("labels: NCR red, ED green, ET yellow", fontsize=9)
        for ax in axes[row]:
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(args.out, dpi=80)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
