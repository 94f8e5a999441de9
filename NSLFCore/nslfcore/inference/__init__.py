"""Whole-case NSLF inference on the original input grid.

The path reads left to right: input (a :class:`~nslfcore.data.case.Case`, four files, or a case
folder) -> :func:`~nslfcore.data.transforms.preprocess_case` (brain mask, crop to the brain's box,
normalisation) -> one network pass per volume or per window (fused volume AND class probabilities
from the same pass; the four modalities go through CU-Net in one batched call) -> paste back onto
the original grid, zero outside the brain -> labels in BraTS 2021 ``{0, 1, 2, 4}`` or 2023
``{0, 1, 2, 3}``.

One file per job: :mod:`~nslfcore.inference.inputs` (checked cases from files or folders; three of
the four sequences suffice), :mod:`~nslfcore.inference.missing` (what a missing sequence costs, in one sentence),
:mod:`~nslfcore.inference.devices` (device choice), :mod:`~nslfcore.inference.memory` (memory
estimate and out-of-memory detection), :mod:`~nslfcore.inference.strategies` (whole volume, one
modality at a time, or sliding windows, with the fallback between them),
:mod:`~nslfcore.inference.mirroring` (test-time mirroring: flipped passes, probabilities averaged),
:mod:`~nslfcore.inference.confidence` (agreement of the mirrored passes, entropy in the tumour) and
:mod:`~nslfcore.inference.pipeline` (:func:`run`, :func:`fuse`, :func:`segment`).

Arrays are numpy ``(z, y, x)`` (SimpleITK order); the geometry is the input's (ITK ``(x, y, z)``
mm, LPS). Whole-volume inference is used when the estimated memory (:func:`estimate_memory_bytes`)
fits; if not, the whole volume one modality at a time through CU-Net and FCD (``"sequential"``:
the same result with about half the peak memory); otherwise MONAI's sliding-window inference with
Gaussian blending. When memory runs out anyway the next of these is tried, windows shrink, and on
CUDA the CPU is used last, each step with a warning.

Example:
    >>> from nslfcore.data.phantom import generate_tiny_case
    >>> from nslfcore.config import PRESETS
    >>> from nslfcore.models import NSLF
    >>> result = run(generate_tiny_case(), NSLF(PRESETS["compact"]), device="cpu")
    >>> result.fused.shape == result.labels.shape == result.geometry.shape
    True
"""

from nslfcore.inference.confidence import CONFIDENCE_NAME, Confidence, read_confidence
from nslfcore.inference.devices import resolve_device
from nslfcore.inference.inputs import Source, as_case, check_case, load_inputs
from nslfcore.inference.memory import available_bytes, estimate_memory_bytes
from nslfcore.inference.mirroring import DEFAULT_MIRROR, MIRRORS, Mirror
from nslfcore.inference.missing import MISSING_SEQUENCE_COST, missing_sentence
from nslfcore.inference.pipeline import InferenceResult, LabelConvention, fuse, run, segment
from nslfcore.inference.precision import PRECISIONS, Precision, cpu_has_native_bf16, resolve_precision
from nslfcore.inference.strategies import DEFAULT_ROI, MODE_DESCRIPTIONS, Mode, Progress

__all__ = [
    "CONFIDENCE_NAME",
    "Confidence",
    "DEFAULT_MIRROR",
    "MIRRORS",
    "Mirror",
    "DEFAULT_ROI",
    "MISSING_SEQUENCE_COST",
    "MODE_DESCRIPTIONS",
    "PRECISIONS",
    "Precision",
    "InferenceResult",
    "LabelConvention",
    "Mode",
    "Progress",
    "Source",
    "as_case",
    "available_bytes",
    "check_case",
    "cpu_has_native_bf16",
    "estimate_memory_bytes",
    "fuse",
    "load_inputs",
    "missing_sentence",
    "resolve_device",
    "read_confidence",
    "resolve_precision",
    "run",
    "segment",
]
