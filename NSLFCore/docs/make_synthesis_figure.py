"""Make docs/synthesis.png: synthesised cases beside a phantom case, each sequence on the slice with the most tumour.

Each row is one case: T1, T1ce, T2, FLAIR (each scaled to its own 0.5-99.5th brain percentile, the
way a viewer's auto window shows it), the synthesis label map (normal structures and look-alikes)
and the training labels on FLAIR. The last row is a phantom case (``nslf phantom``), the generator
the shipped model v4 was trained on: its contrast is always the same.

Run from the repository root: ``python NSLFCore/docs/make_synthesis_figure.py [--seed S] [--cases I ...] [--out PATH]``.
Needs matplotlib and ``nslfcore[phantom]``.
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
from nslfcore.data.phantom import generate_case  # noqa: E402
from nslfcore.synthesis import labels as L  # noqa: E402
from nslfcore.synthesis.generator import synthesise_case  # noqa: E402

TITLES = {"t1": "T1", "t1ce": "T1ce", "t2": "T2", "flair": "FLAIR"}
#: internal labels 1 NCR (red), 2 ED (green), 3 ET (yellow): the usual BraTS overlay colours
TARGET_COLOURS = ListedColormap([(0, 0, 0, 0), (0.9, 0.1, 0.1, 0.6), (0.1, 0.8, 0.1, 0.45), (1.0, 0.9, 0.0, 0.7)])
#: synthesis labels, in the order of nslfcore.synthesis.labels.LABEL_NAMES
STRUCTURE_COLOURS = ListedColormap([
    (0, 0, 0), (0.25, 0.35, 0.6), (0.1, 0.2, 0.9), (0.55, 0.55, 0.55), (0.4, 0.4, 0.4), (0.85, 0.85, 0.85),
    (0.9, 0.5, 0.9), (1.0, 0.2, 0.2), (0.8, 0.1, 0.4), (0.3, 0.9, 0.9), (0.9, 0.7, 0.4),
    (0.5, 0.1, 0.1), (0.6, 0.3, 0.1), (0.1, 0.7, 0.1), (1.0, 0.9, 0.0),
])  # fmt: skip


def _show(ax, image: np.ndarray, title: str) -> None:
    inside = image[image != 0]
    low, high = np.percentile(inside, [0.5, 99.5]) if inside.size else (0, 1)
    # radiological display: patient left on the image right; anterior up (array row j=0 is anterior)
    ax.imshow(image[:, ::-1], cmap="gray", vmin=low, vmax=high)
    ax.set_title(title, fontsize=8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cases", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("synthesis.png"))
    args = parser.parse_args()
    rows = len(args.cases) + 1
    fig, axes = plt.subplots(rows, 6, figsize=(16, 2.9 * rows), squeeze=False)
    for row in range(rows):
        if row < len(args.cases):
            synthetic = synthesise_case(args.seed, args.cases[row])
            case, structures = synthetic.case, synthetic.synthesis.labels
            name = f"{case.name} ({synthetic.synthesis.tumour_type.replace('_', ' ')})"
        else:
            case, structures, name = generate_case(2000, 1000), None, "phantom 01000 (v4's generator)"
        assert case.label is not None
        z = int(np.argmax((case.label > 0).sum(axis=(1, 2))))
        for col, modality in enumerate(MODALITIES):
            _show(axes[row, col], case.images[modality][z], f"{name} {TITLES[modality]} z={z}" if col == 0 else TITLES[modality])
        if structures is not None:
            axes[row, 4].imshow(structures[z][:, ::-1], cmap=STRUCTURE_COLOURS, vmin=0, vmax=L.NUM_LABELS - 1,
                                interpolation="nearest")  # fmt: skip
            axes[row, 4].set_title("structures: vessels red, WMH cyan, choroid pink,\nventricles blue, residue tan", fontsize=7)
        _show(axes[row, 5], case.images["flair"][z], "labels on FLAIR: NCR red,\nED green, ET yellow")
        axes[row, 5].imshow(case.label[z][:, ::-1], cmap=TARGET_COLOURS, vmin=0, vmax=3, interpolation="nearest")
        for ax in axes[row]:
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(args.out, dpi=72)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
