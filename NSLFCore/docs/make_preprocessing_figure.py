"""Make docs/preprocessing.png: a simulated raw exam through ``--preprocess``, step by step.

Row 1: the raw exam as read, each sequence on its own grid (the middle slice of each, in its own
acquisition plane). Row 2: the T1ce with deepbet's brain mask (red outline), and the four sequences
after co-registration, skull stripping and affine alignment, on the atlas grid (axial slice with the
most tumour). Row 3: on the T1ce's native grid, the truth and the shipped model's result (NCR red,
ED green, ET yellow), and the fused volume brought back. Each image is scaled to its own 0.5-99.5th
percentile, as a viewer's auto window shows it.

Run from the repository root: ``python NSLFCore/docs/make_preprocessing_figure.py [--seed S] [--index I] [--out PATH]``.
Needs matplotlib, deepbet and ``nslfcore[phantom]``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import SimpleITK as sitk  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402

from nslfcore import MODALITIES  # noqa: E402
from nslfcore.data.labels import internal_to_brats2021  # noqa: E402
from nslfcore.data.raw_exam import simulate_raw_exam  # noqa: E402
from nslfcore.inference import run as infer  # noqa: E402

TITLES = {"t1": "T1", "t1ce": "T1ce", "t2": "T2", "flair": "FLAIR"}
#: BraTS 2021 labels 1 NCR (red), 2 ED (green), 4 ET (yellow)
COLOURS = ListedColormap([(0, 0, 0, 0), (0.9, 0.1, 0.1, 0.6), (0.1, 0.8, 0.1, 0.45), (0, 0, 0, 0), (1.0, 0.9, 0.0, 0.7)])


def _window(image: np.ndarray) -> np.ndarray:
    values = image[image > 0] if (image > 0).any() else image.ravel()
    low, high = np.percentile(values, (0.5, 99.5))
    return np.clip((image - low) / max(high - low, 1e-6), 0, 1)


def _show(ax, image: np.ndarray, title: str, spacing: tuple[float, float] = (1.0, 1.0)) -> None:
    """``image`` is a 2-D (row, column) slice; ``spacing`` its (row, column) mm, so that it shows in proportion."""
    ax.imshow(_window(image), cmap="gray", aspect=spacing[0] / spacing[1], interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.axis("off")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--index", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("preprocessing.png"))
    args = parser.parse_args()

    exam = simulate_raw_exam(args.seed, args.index)
    result = infer(exam.images, None, device="cpu", preprocess=True)
    prepared = result.preprocessed
    fig, axes = plt.subplots(3, 5, figsize=(17, 10.5))

    for column, modality in enumerate(MODALITIES):
        image = exam.images[modality]
        array = sitk.GetArrayFromImage(image)  # (k, j, i): slices along the acquisition's slice axis
        acquisition = exam.acquisitions[modality]
        spacing = image.GetSpacing()
        _show(axes[0, column], array[array.shape[0] // 2],
              f"raw {TITLES[modality]}: {acquisition.orientation}, tilted {acquisition.tilt_degrees:.0f} deg\n"
              f"{spacing[0]:.2f} x {spacing[1]:.2f} x {spacing[2]:.1f} mm, {image.GetSize()}",
              (spacing[1], spacing[0]))  # fmt: skip
    axes[0, 4].axis("off")
    axes[0, 4].text(0.0, 0.5, "Each sequence on its own grid:\nits own plane, tilt, matrix, slice thickness,\n"
                    "head position, bias field and scanner units.\n\nThe skull, scalp and neck are on.", fontsize=10,
                    va="center")  # fmt: skip

    t1ce = sitk.GetArrayFromImage(exam.images["t1ce"])
    mask = sitk.GetArrayFromImage(prepared.brain.native)
    truth = internal_to_brats2021(sitk.GetArrayFromImage(exam.truth))
    k = int(np.argmax((truth > 0).sum(axis=(1, 2))))
    spacing = exam.images["t1ce"].GetSpacing()
    _show(axes[1, 0], t1ce[k], f"T1ce slice {k} with deepbet's brain mask\n({prepared.brain.volume_ml:.0f} ml)",
          (spacing[1], spacing[0]))  # fmt: skip
    axes[1, 0].contour(mask[k], [0.5], colors="red", linewidths=0.8)
    truth_image = sitk.GetImageFromArray(truth.astype(np.uint8))
    truth_image.CopyInformation(exam.truth)
    truth_in_atlas = sitk.GetArrayFromImage(sitk.Resample(truth_image, prepared.alignment.reference,
                                                          prepared.alignment.transform, sitk.sitkNearestNeighbor))  # fmt: skip
    z = int(np.argmax((truth_in_atlas > 0).sum(axis=(1, 2))))
    for column, modality in enumerate(MODALITIES, start=1):
        atlas = sitk.GetArrayFromImage(prepared.atlas_images[modality])
        title = f"{TITLES[modality]} on the atlas grid (slice {z})\nco-registered, skull-stripped, affine"
        _show(axes[1, column], atlas[z], title)

    _show(axes[2, 0], t1ce[k], "truth on the T1ce grid", (spacing[1], spacing[0]))
    axes[2, 0].imshow(truth[k], cmap=COLOURS, vmin=0, vmax=4, aspect=spacing[1] / spacing[0], interpolation="nearest")
    _show(axes[2, 1], t1ce[k], "shipped model, brought back\nonto the T1ce grid", (spacing[1], spacing[0]))
    axes[2, 1].imshow(result.labels[k], cmap=COLOURS, vmin=0, vmax=4, aspect=spacing[1] / spacing[0], interpolation="nearest")
    _show(axes[2, 2], result.fused[k], "fused volume, T1ce grid", (spacing[1], spacing[0]))
    flair_native = sitk.GetArrayFromImage(prepared.coregistered()["flair"])
    _show(axes[2, 3], flair_native[k], "FLAIR co-registered\nonto the T1ce grid", (spacing[1], spacing[0]))
    axes[2, 4].axis("off")
    steps = "\n".join(f"{step}: {seconds:.1f} s" for step, seconds in prepared.timings.items())
    axes[2, 4].text(0.0, 0.5, f"Preprocessing on this CPU\n{steps}\nnetwork and way back: "
                    f"{result.timings['inference'] + result.timings['postprocess']:.1f} s", fontsize=10, va="center")  # fmt: skip
    fig.suptitle(f"nslf run --preprocess on a simulated raw exam (seed {args.seed}, case {args.index})", fontsize=12)
    fig.tight_layout()
    fig.savefig(args.out, dpi=80)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
