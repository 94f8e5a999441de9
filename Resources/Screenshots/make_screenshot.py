"""Draw ``NSLFSlicer.png``, the Extensions Index screenshot: the module's panel with the results of a real run.

    .venv/bin/python Resources/Screenshots/make_screenshot.py [--work DIR] [--out PNG]

What is drawn is what the panel shows after "Load sample case" and "Fuse + Segment" with the
shipped default model on the CPU, in Slicer's "Four-Up Table" layout:

* the run: the panel's sample case (:func:`NSLFSlicerLib.sample_case.generate_command`: seed 7,
  never used in training) through ``Scripts/nslf_batch.py`` (the module's logic on slicer-core
  MRML, the shipped model, offscreen 3-D ``render.png``); its fused volume, labels, table,
  confidence line and run time are what the picture shows;
* the panel: the widgets of ``NSLFSlicer/Resources/UI/NSLFSlicer.ui`` in their order (sections,
  labels, selectors, buttons; collapsed sections as headers), filled with the run's values and the
  model's info text (:func:`NSLFSlicerLib.panel_state.model_info_text`);
* the views: Red (axial), 3-D (``render.png``), Yellow (sagittal), Green (coronal) through the
  tumour's centre, the fused volume with the segments filled and outlined in their terminology
  colours (:func:`NSLFSlicerLib.terminology.segment_specs`), and the tumour volumes table.

The 3D Slicer application cannot run here; this is a drawing of its window, not a grab of it.
Arrays are read with SimpleITK as ``(z, y, x)`` in LPS; the slice views follow Slicer's
orientation (patient right on the screen's left in axial and coronal, anterior on the left in
sagittal, superior up). The PNG is quantised to 256 colours to stay under the Index's size habits
(< 500 KB).
"""

from __future__ import annotations

import argparse
import csv
import html
import os
import re
import subprocess
import sys
import tempfile
import textwrap
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
MODULE = ROOT / "NSLFSlicer"
sys.path.insert(0, str(MODULE))

from NSLFSlicerLib import ensure_engine_on_path

ensure_engine_on_path()
from NSLFSlicerLib.sample_case import CASE_NAME, case_folder, generate_command
from NSLFSlicerLib.terminology import segment_specs

UI = MODULE / "Resources" / "UI" / "NSLFSlicer.ui"
OUT = Path(__file__).with_name("NSLFSlicer.png")
WIDTH, HEIGHT, DPI = 1600, 900, 100
PANEL_W = 0.31  # fraction of the window's width
PANEL_BG, SECTION_BG, FIELD_BG, TEXT, DIM = "#f0f0f0", "#dcdcdc", "#ffffff", "#202020", "#707070"
VIEW_COLOURS = {"Red": "#f34a33", "Yellow": "#eddd5f", "Green": "#6eb04b", "3D": "#7483e9"}


def run_sample_case(work: Path) -> tuple[Path, Path, str]:
    """The panel's sample case and a Fuse + Segment run on it (CPU); returns (case folder, results folder, batch log)."""
    case_dir, results = case_folder(work / "sample"), work / "results"
    if not (results / "labels.nii.gz").is_file():
        args, env = generate_command(work / "sample")
        subprocess.run(args, env={**os.environ, **env}, check=True, capture_output=True)
        batch = [sys.executable, str(MODULE / "Scripts" / "nslf_batch.py"), "--case", str(case_dir), "--out", str(results),
                 "--device", "cpu", "--overwrite"]  # fmt: skip
        proc = subprocess.run(batch, check=True, capture_output=True, text=True)
        (work / "batch.log").write_text(proc.stdout + proc.stderr, encoding="utf-8")
    return case_dir, results, (work / "batch.log").read_text(encoding="utf-8")


def panel_values(case_dir: Path, log: str) -> dict[str, str]:
    """What each widget of the .ui shows after the run, by object name."""
    from NSLFSlicerLib.model_manager import installed_models
    from NSLFSlicerLib.panel_state import model_info_text

    model = installed_models()[0]
    info = model_info_text(model)
    seconds = re.search(r"done in ([\d.]+) s", log)
    confidence = re.search(r"confidence: (.*)", log)
    names = {m: f"{CASE_NAME}_{m}" for m in ("t1", "t1ce", "t2", "flair")}
    return {
        "t1Selector": names["t1"], "t1ceSelector": names["t1ce"], "t2Selector": names["t2"], "flairSelector": names["flair"],
        "modelComboBox": model.label(), "modelInfoLabel": info,
        "deviceComboBox": "CPU", "mirrorComboBox": "none",
        "outputVolumeSelector": f"{CASE_NAME} NSLF fused", "outputSegmentationSelector": f"{CASE_NAME} NSLF segmentation",
        "progressBar": "100%", "statusLabel": f"Done in {float(seconds[1]):.0f} s." if seconds else "Done.",
        "confidenceLabel": f"Confidence: {confidence[1].strip()}." if confidence else "",
        "preprocessReasonLabel": "", "userModelsPathLineEdit": "",
    }  # fmt: skip


def ui_rows(values: dict[str, str]) -> list[tuple[str, ...]]:
    """The .ui's widgets in order as drawing rows: ("section", text, collapsed), ("field", label, value),
    ("buttons", texts...), ("check", text, ticked), ("text", text), ("progress", text)."""
    root = ET.parse(UI).getroot()
    rows: list[tuple[str, ...]] = []

    def prop(widget: ET.Element, name: str) -> str | None:
        for p in widget.findall("property"):
            if p.get("name") == name and len(p):
                return p[0].text
        return None

    def walk(layout: ET.Element) -> None:
        pending_label = None
        buttons = [prop(w, "text") or "" for w in layout.findall("item/widget") if w.get("class") == "QPushButton"]
        if buttons and layout.get("class") == "QHBoxLayout":
            rows.append(("buttons", *buttons))
            return
        for item in layout.findall("item"):
            for child in item:
                if child.tag == "layout":
                    walk(child)
                if child.tag != "widget":
                    continue
                kind, name = child.get("class"), child.get("name")
                if kind == "ctkCollapsibleButton":
                    collapsed = prop(child, "collapsed") == "true"
                    rows.append(("section", prop(child, "text") or "", "1" if collapsed else ""))
                    inner = child.find("layout")
                    if inner is not None and not collapsed:
                        walk(inner)
                elif kind == "QLabel" and item.get("column") == "0":
                    pending_label = prop(child, "text") or ""
                elif kind == "QLabel":
                    text = values.get(name, prop(child, "text") or "")
                    if text:
                        rows.append(("text", text))
                elif kind == "QCheckBox":
                    rows.append(("check", prop(child, "text") or "", "1" if name == "resampleCheckBox" else ""))
                elif kind == "QProgressBar":
                    rows.append(("progress", values.get(name, "")))
                elif kind == "QPushButton":
                    rows.append(("buttons", prop(child, "text") or ""))
                elif pending_label is not None:
                    rows.append(("field", pending_label, values.get(name, "")))
                    pending_label = None

    walk(root.find("widget/layout"))
    return rows


def draw_panel(fig, values: dict[str, str]) -> None:
    from matplotlib.patches import FancyBboxPatch, Rectangle

    ax = fig.add_axes((0, 0, PANEL_W, 0.94))
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.axis("off")
    ax.add_patch(Rectangle((0, 0), 1, 1, color=PANEL_BG))
    px = 1 / (PANEL_W * WIDTH)  # one pixel in axes x units
    line = 19 / (0.94 * HEIGHT)  # one text line
    y = 1 - 0.6 * line
    ax.text(0.03, y, "Module:", fontsize=9, color=DIM, va="center")
    ax.add_patch(Rectangle((0.17, y - 0.45 * line), 0.8, 0.9 * line, facecolor=FIELD_BG, edgecolor="#a0a0a0"))
    ax.text(0.19, y, "NSLF Fusion and Segmentation", fontsize=9, color=TEXT, va="center")
    y -= 1.6 * line
    for row in ui_rows(values):
        kind = row[0]
        if kind == "section":
            ax.add_patch(Rectangle((0.02, y - 0.5 * line), 0.96, line, facecolor=SECTION_BG, edgecolor="#b8b8b8"))
            arrow = "\u25b8  " if row[2] else "\u25be  "  # collapsed / expanded
            ax.text(0.04, y, arrow + row[1], fontsize=9.5, color=TEXT, va="center", weight="bold")
            y -= 1.35 * line
        elif kind == "field":
            ax.text(0.05, y, row[1], fontsize=8.5, color=TEXT, va="center")
            ax.add_patch(Rectangle((0.36, y - 0.45 * line), 0.6, 0.9 * line, facecolor=FIELD_BG, edgecolor="#a0a0a0"))
            value = row[2] if len(row[2]) < 46 else row[2][:44] + "\u2026"
            ax.text(0.375, y, value, fontsize=8, color=TEXT, va="center")
            ax.text(0.94, y, "\u25be", fontsize=8, color=DIM, va="center")
            y -= 1.15 * line
        elif kind == "buttons":
            n = len(row) - 1
            width = (0.92 - 0.02 * (n - 1)) / n
            for i, text in enumerate(row[1:]):
                x = 0.04 + i * (width + 0.02)
                ax.add_patch(FancyBboxPatch((x, y - 0.48 * line), width, 0.96 * line, boxstyle="round,pad=0,rounding_size=0.006",
                                            facecolor="#fbfbfb", edgecolor="#9a9a9a"))  # fmt: skip
                ax.text(x + width / 2, y, text, fontsize=8.5, color=TEXT, va="center", ha="center")
            y -= 1.3 * line
        elif kind == "check":
            ax.add_patch(Rectangle((0.05, y - 0.3 * line), 14 * px, 0.6 * line, facecolor=FIELD_BG, edgecolor="#808080"))
            if row[2]:
                ax.text(0.05 + 7 * px, y, "\u2713", fontsize=8, color=TEXT, va="center", ha="center")
            ax.text(0.05 + 22 * px, y, row[1], fontsize=8.5, color=TEXT, va="center")
            y -= 1.1 * line
        elif kind == "progress":
            ax.add_patch(Rectangle((0.04, y - 0.4 * line), 0.92, 0.8 * line, facecolor="#3daee9", edgecolor="#808080"))
            ax.text(0.5, y, row[1], fontsize=8, color="white", va="center", ha="center")
            y -= 1.15 * line
        elif kind == "text":
            y = draw_rich_text(ax, row[1], y, line)
    ax.add_patch(Rectangle((1 - 2 * px, 0), 2 * px, 1, color="#b0b0b0"))


def draw_rich_text(ax, text: str, y: float, line: float) -> float:
    """A label's text (Qt rich text: ``<p>`` paragraphs, a red bold one for the model's caution) wrapped to the panel."""
    paragraphs = re.findall(r"<p([^>]*)>(.*?)</p>", text, re.DOTALL) or [("", text)]
    for attributes, body in paragraphs:
        plain = html.unescape(re.sub(r"<[^>]+>", "", body)).strip()
        warn = "color" in attributes
        lines = textwrap.wrap(plain if warn else textwrap.shorten(plain, 3 * 76, placeholder=" \u2026"), 78)
        for text_line in lines:
            ax.text(0.05, y, text_line, fontsize=7.3, color="#c0392b" if warn else "#404040", va="center",
                    weight="bold" if warn else "normal")  # fmt: skip
            y -= 0.78 * line
        y -= 0.3 * line
    return y


def slices(results: Path) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int], tuple[float, float, float]]:
    """Fused volume and labels ``(z, y, x)`` (LPS), the tumour's centre voxel ``(z, y, x)`` and its RAS position (mm)."""
    import SimpleITK as sitk

    image = sitk.ReadImage(str(results / "fused.nii.gz"))
    fused = sitk.GetArrayFromImage(image).astype(np.float32)
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(results / "labels.nii.gz")))
    centre = tuple(round(c) for c in np.argwhere(labels > 0).mean(axis=0))
    x, y, z = image.TransformIndexToPhysicalPoint((centre[2], centre[1], centre[0]))  # LPS mm
    return fused, labels, centre, (-x, -y, z)  # type: ignore[return-value]


def draw_slice(ax, image: np.ndarray, label: np.ndarray, name: str, caption: str, lo: float, hi: float) -> None:
    """One slice view: ``image``/``label`` 2-D, row 0 at the top of the screen."""
    from matplotlib.colors import ListedColormap

    ax.imshow(image, cmap="gray", vmin=lo, vmax=hi, interpolation="bilinear")
    for spec in segment_specs():
        mask = (label == spec.label).astype(float)
        if mask.any():
            ax.imshow(np.ma.masked_equal(mask, 0), cmap=ListedColormap([spec.color]), alpha=0.45, interpolation="nearest")
            ax.contour(mask, levels=[0.5], colors=[spec.color], linewidths=0.9)
    ax.set_facecolor("black")
    ax.set_adjustable("datalim")  # the image centred in the whole view, black around it, as Slicer shows it
    ax.set_xticks([])
    ax.set_yticks([])
    view_header(ax, name, caption)


def view_header(ax, name: str, caption: str) -> None:
    ax.set_title(f"  {name[0] if name != '3D' else '1'}   {caption}", loc="left", fontsize=8.5, color="black",
                 backgroundcolor=VIEW_COLOURS[name], pad=2)  # fmt: skip
    for spine in ax.spines.values():
        spine.set_color(VIEW_COLOURS[name])


def draw_views(fig, results: Path) -> None:
    import matplotlib.image as mpimg

    fused, labels, (cz, cy, cx), (r, a, s) = slices(results)
    lo, hi = np.percentile(fused[fused > 0], [1, 99.5])
    left, width = PANEL_W + 0.005, 1 - PANEL_W - 0.01
    top, table_h = 0.935, 0.2
    cell_w, cell_h = width / 2, (top - table_h - 0.02) / 2
    spots = {"Red": (0, 0), "3D": (1, 0), "Yellow": (0, 1), "Green": (1, 1)}
    axes = {k: fig.add_axes((left + c * cell_w + 0.003, top - (r + 1) * cell_h + 0.003, cell_w - 0.006, cell_h - 0.03))
            for k, (c, r) in spots.items()}  # fmt: skip
    # Axial: rows y (anterior at the top), columns x (patient left on the right). Superior = +z in LPS.
    draw_slice(axes["Red"], fused[cz], labels[cz], "Red", f"S: {s:.1f}mm", lo, hi)
    # Sagittal: rows z flipped (superior up), columns y (anterior on the left).
    draw_slice(axes["Yellow"], fused[::-1, :, cx], labels[::-1, :, cx], "Yellow", f"R: {r:.1f}mm", lo, hi)
    # Coronal: rows z flipped, columns x (patient right on the left).
    draw_slice(axes["Green"], fused[::-1, cy, :], labels[::-1, cy, :], "Green", f"A: {a:.1f}mm", lo, hi)
    render = mpimg.imread(str(results / "render.png"))
    axes["3D"].imshow(render)
    axes["3D"].set_facecolor("black")
    axes["3D"].set_adjustable("datalim")
    axes["3D"].set_xticks([])
    axes["3D"].set_yticks([])
    view_header(axes["3D"], "3D", "")
    draw_table(fig.add_axes((left + 0.003, 0.01, width - 0.006, table_h - 0.01)), results)


def draw_table(ax, results: Path) -> None:
    with open(results / "tumor_volumes.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    header, body = rows[0], rows[1:]
    keep = [header.index(c) for c in ("Region", "Description", "Labels", "Voxels", "Volume [mL]", "Mean entropy", "Confidence")]
    cells = [[row[i] for i in keep] for row in body]
    ax.axis("off")
    ax.set_title("  NSLF tumor volumes", loc="left", fontsize=8.5, backgroundcolor="#d0d0d0", pad=2)
    table = ax.table(cellText=cells, colLabels=[header[i] for i in keep], loc="upper center", cellLoc="left",
                     colWidths=[0.07, 0.3, 0.07, 0.1, 0.11, 0.11, 0.1])  # fmt: skip
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    table.scale(1, 1.18)
    for (r, _), cell in table.get_celld().items():
        cell.set_edgecolor("#c8c8c8")
        if r == 0:
            cell.set_facecolor("#e8e8e8")


def compose(results: Path, values: dict[str, str], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle
    from PIL import Image

    fig = plt.figure(figsize=(WIDTH / DPI, HEIGHT / DPI), dpi=DPI, facecolor="#e6e6e6")
    bar = fig.add_axes((0, 0.94, 1, 0.06))
    bar.axis("off")
    bar.add_patch(Rectangle((0, 0), 1, 1, color="#f7f7f7", transform=bar.transAxes))
    bar.text(0.01, 0.62, "3D Slicer 5.10", fontsize=11, weight="bold", color=TEXT, va="center")
    bar.text(0.01, 0.22, "File   Edit   View   Help        Layout: Four-Up Table        Modules: Segmentation \u25b8 "
             "NSLF Fusion and Segmentation", fontsize=8.5, color=DIM, va="center")  # fmt: skip
    draw_panel(fig, values)
    draw_views(fig, results)
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.png"
        fig.savefig(raw, dpi=DPI)
        plt.close(fig)
        Image.open(raw).convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(out, optimize=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=None,
                        help="folder for the sample case and the run (reused when it holds results)")
    parser.add_argument("--out", type=Path, default=OUT, help=f"the PNG to write (default {OUT.relative_to(ROOT)})")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="nslf-screenshot-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        case_dir, results, log = run_sample_case(work)
        compose(results, panel_values(case_dir, log), args.out)
    print(f"{args.out} ({args.out.stat().st_size // 1024} KB) in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
