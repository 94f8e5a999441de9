"""The child process of a background run: NSLF on input files, results as files, progress as JSON lines.

``python inference_worker.py JOB.json`` (``PythonSlicer`` inside Slicer) where the job holds::

    {"engine_path": "<folder holding nslfcore/>", "inputs": {"t1": "t1.nii", ...},
     "model": "<id, .pt path or URL>" or null, "models_dir": "<registry folder>", "device": "auto",
     "fuse": true, "segment": true, "mirror": "none" | "lr" | "all" | null, "out": "<folder>",
     "preprocess": false}

Writes ``fused.nii`` (float32) and ``labels.nii`` (uint8, BraTS 2021 labels; uncompressed: Slicer reads
them on its GUI thread) into ``out``
on the inputs' grid, printing ``{"progress": f, "message": m}`` lines, then
``{"result": {"fused": path|null, "labels": path|null, "mode": ..., "device": ..., "timings": {...},
"missing": modality|null, "message": sentence, "confidence": {...}|null, "preprocessed": {...}|null}}``
(``preprocessed``: with ``"preprocess": true`` the inputs are a raw exam, each file on its own grid,
co-registered, skull-stripped and aligned to the atlas by the engine first, whose messages are
progress lines; results are on the grid of the exam's reference, and this holds that reference and
the files of :func:`write_preprocessed`; ``confidence``: the
segmentation's :meth:`nslfcore.inference.Confidence.to_dict`; ``inputs`` may lack one modality: ``message`` then
says which and what it costs, :func:`nslfcore.inference.missing.missing_sentence`, and is also a
progress line);
on failure ``{"error": "one sentence"}`` and exit code 1 (the protocol of :mod:`.process_runner`).
Imports only nslfcore and ``NSLFSlicerLib/__init__`` (no Slicer), so it starts fast and cannot touch the scene.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def emit(**message: object) -> None:
    print(json.dumps(message), flush=True)


def run(job: dict) -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the module folder holding NSLFSlicerLib
    from NSLFSlicerLib import ensure_engine_on_path

    ensure_engine_on_path(job["engine_path"])
    import numpy as np
    from nslfcore.data.io import write_image
    from nslfcore.inference import DEFAULT_MIRROR, as_case
    from nslfcore.inference import run as infer
    from nslfcore.inference.missing import missing_sentence
    from nslfcore.model_store import load_model

    emit(progress=0.0, message="loading the model")
    model, info = load_model(job.get("model"), device="cpu", models_dir=job.get("models_dir"))
    preprocess = bool(job.get("preprocess"))
    result = infer(
        job["inputs"] if preprocess else as_case(job["inputs"]), model, fuse=job["fuse"], segment=job["segment"],
        device=job.get("device", "auto"), mirror=job.get("mirror") or DEFAULT_MIRROR, preprocess=preprocess,
        progress=lambda fraction, message: emit(progress=0.05 + 0.9 * fraction, message=message),
    )  # fmt: skip
    out = Path(job["out"])
    paths: dict[str, object] = {"fused": None, "labels": None, "preprocessed": None}
    if result.fused is not None:
        paths["fused"] = str(write_image(result.fused, result.geometry, out / "fused.nii", np.float32))
    if result.labels is not None:
        paths["labels"] = str(write_image(result.labels, result.geometry, out / "labels.nii", np.uint8))
    if result.preprocessed is not None:
        paths["preprocessed"] = write_preprocessed(result.preprocessed, out)
    message = "" if result.missing is None else missing_sentence(result.missing, info.id, job["fuse"], job["segment"])
    emit(progress=1.0, message=message or "results written")
    return {**paths, "model": info.id, "mode": result.mode, "device": result.device, "timings": result.timings,
            "missing": result.missing, "message": message,
            "confidence": result.confidence.to_dict() if job["segment"] and result.confidence else None}  # fmt: skip


def write_preprocessed(exam, out: Path) -> dict:
    """What the panel shows of a preprocessed run, as files in ``out``; returns their paths.

    ``{"reference": "t1ce", "brain_mask": "<out>/brain_mask.nii.gz" (uint8, the reference's native grid),
    "registrations": {"t1": "<out>/t1_to_t1ce.tfm", ...} (rigid, ITK resampling transforms: reference
    point -> sequence point), "atlas": "<out>/t1ce_to_atlas.tfm" (affine: atlas point -> reference point)}``.
    ``exam`` is the run's :class:`nslfcore.preprocess.pipeline.PreparedExam`.
    """
    import SimpleITK as sitk

    out.mkdir(parents=True, exist_ok=True)
    mask = out / "brain_mask.nii.gz"
    sitk.WriteImage(exam.brain.native, str(mask), useCompression=True)
    registrations = {}
    for name, registration in exam.registrations.items():
        registrations[name] = str(out / f"{name}_to_{exam.reference}.tfm")
        sitk.WriteTransform(registration.transform, registrations[name])
    atlas = out / f"{exam.reference}_to_atlas.tfm"
    sitk.WriteTransform(exam.alignment.transform, str(atlas))
    return {"reference": exam.reference, "brain_mask": str(mask), "registrations": registrations, "atlas": str(atlas)}


def main(argv: list[str]) -> int:
    try:
        job = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
        emit(result=run(job))
    except Exception as error:  # every failure becomes one sentence for the error dialog
        emit(error=f"{type(error).__name__}: {error}" if not str(error).endswith(".") else str(error))
        import traceback

        traceback.print_exc(file=sys.stdout)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
