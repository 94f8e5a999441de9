"""A raw exam to the model's inputs and the results back to the exam's grid (issue 32): the chain.

:func:`prepare_exam` reads left to right, each step one module of this package:

1. **co-register** every sequence to the reference (T1ce; the first present of T1ce, T1, FLAIR,
   T2 when it is missing), rigid, mutual information (:func:`~nslfcore.preprocess.registration.register_rigid`);
2. **extract the brain** from the reference (:func:`~nslfcore.preprocess.brain_extraction.extract_brain`, deepbet by default);
3. **align to the atlas** the skull-stripped reference, affine (:func:`~nslfcore.preprocess.atlas.register_to_atlas`);
4. **resample** every sequence from its own native grid straight onto the atlas's 1 mm grid through
   the composed transforms (one interpolation each, linear) and set everything outside the brain
   mask to 0, as the training cases are;
5. optionally, **N4** bias-field correction of each atlas-space sequence inside the brain (:mod:`~nslfcore.preprocess.bias`).

The network then runs on :meth:`PreparedExam.case` (the atlas grid), and :meth:`PreparedExam.restore`
brings its labels (nearest neighbour) and fused volume and probabilities (linear) back onto the
reference's native grid, the grid of the file it was read from. :meth:`PreparedExam.write` keeps
the intermediate results (``--keep-preprocessed``): the brain mask on the native grid, the
co-registered sequences, the atlas-space inputs and the transforms as ``.tfm`` files that
SimpleITK and Slicer read.

Every step that fails raises one sentence (:class:`~nslfcore.preprocess.registration.RegistrationError`,
:class:`~nslfcore.preprocess.brain_extraction.BrainExtractionError`); nothing is written by this
module except by :meth:`PreparedExam.write`. ``progress(fraction, message)`` is called before each
step (``fraction`` of the preprocessing, 0-1); an exception raised by it (a Cancel button) stops
the chain there.

Images are ``SimpleITK.Image`` (indexed ``(x, y, z)``, mm, LPS); arrays are ``(z, y, x)``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nslfcore import MODALITIES
from nslfcore.data.case import Case, Geometry
from nslfcore.preprocess.atlas import AtlasAlignment, register_to_atlas
from nslfcore.preprocess.bias import correct_bias
from nslfcore.preprocess.brain_extraction import BrainMask, extract_brain
from nslfcore.preprocess.orientation import resample_like
from nslfcore.preprocess.registration import RAW_WORKING_SPACING_MM, RegistrationResult, register_rigid

REFERENCE_ORDER = ("t1ce", "t1", "flair", "t2")

MIN_COVERAGE = 0.97
"""A sequence whose field of view holds less of the brain than this fraction gets a warning."""
"""The reference sequence is the first of these the exam has."""

Progress = Callable[[float, str], None]


@dataclass(frozen=True)
class PreprocessOptions:
    """What :func:`prepare_exam` does.

    Attributes:
        extractor: the brain extractor (:data:`~nslfcore.preprocess.brain_extraction.EXTRACTORS`).
        bias_correction: N4 bias-field correction of each atlas-space sequence (off by default: the
            model's normalisation copes with smooth fields, and N4 costs a few seconds per sequence).
        device: where the brain extractor runs (``"cpu"`` or ``"cuda"``).
        seed: the registrations' metric-sampling seed (same exam and seed, same transforms).
    """

    extractor: str = "deepbet"
    bias_correction: bool = False
    device: str = "cpu"
    seed: int = 32


@dataclass
class PreparedExam:
    """A raw exam on the atlas grid, and what is needed to go back.

    Attributes:
        name: the case's name.
        native: sequence -> image as read (its own grid).
        reference: the sequence whose native grid the results go back to (``"t1ce"`` when present).
        registrations: sequence -> its rigid registration to the reference (maps reference points to
            the sequence's points; the reference has none).
        brain: the brain mask (:class:`~nslfcore.preprocess.brain_extraction.BrainMask`; ``native`` on the reference's grid).
        alignment: the reference's affine alignment to the atlas (maps atlas points to reference points).
        atlas_images: sequence -> float32 image on the atlas grid, 0 outside the brain.
        atlas_mask: the brain mask on the atlas grid (uint8).
        timings: seconds per step (``coregister``, ``brain``, ``atlas``, ``resample``, ``bias``).
        coverage: sequence -> the fraction of the brain (atlas mask) inside its native field of view;
            below :data:`MIN_COVERAGE` the results there rest on the other sequences (:meth:`warnings`).
    """

    name: str
    native: dict[str, sitk.Image]
    reference: str
    registrations: dict[str, RegistrationResult]
    brain: BrainMask
    alignment: AtlasAlignment
    atlas_images: dict[str, sitk.Image]
    atlas_mask: sitk.Image
    timings: dict[str, float] = field(default_factory=dict)
    coverage: dict[str, float] = field(default_factory=dict)

    def warnings(self) -> list[str]:
        """One sentence per sequence whose field of view leaves part of the brain out."""
        return [f"{self.name}: the {sequence} covers only {100 * fraction:.0f} % of the brain (its field of view ends "
                "inside it); the results there rest on the other sequences."
                for sequence, fraction in self.coverage.items() if fraction < MIN_COVERAGE]  # fmt: skip

    @property
    def native_grid(self) -> sitk.Image:
        """The reference's native image: the grid the results go back to."""
        return self.native[self.reference]

    def atlas_to_sequence(self, sequence: str) -> sitk.Transform:
        """The transform mapping an atlas point to ``sequence``'s native point (atlas -> reference -> sequence)."""
        composite = sitk.CompositeTransform(3)
        if sequence != self.reference:
            composite.AddTransform(self.registrations[sequence].transform)
        composite.AddTransform(self.alignment.transform)  # applied first: atlas point -> reference point
        return composite

    def case(self) -> Case:
        """The atlas-space inputs as a :class:`Case` (float32 arrays ``(z, y, x)``, the atlas grid, no labels)."""
        images = {m: sitk.GetArrayFromImage(image).astype(np.float32) for m, image in self.atlas_images.items()}
        return Case(name=self.name, images=images, label=None, geometry=Geometry.from_image(self.alignment.reference))

    def restore(
        self, labels: np.ndarray | None, fused: np.ndarray | None, probabilities: np.ndarray | None = None
    ) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None, Geometry]:
        """Atlas-grid results ``(z, y, x)`` (probabilities ``(4, z, y, x)``) on the reference's native grid.

        Labels by nearest neighbour; the fused volume and the probabilities linearly (background
        probability 1 where the atlas grid does not reach). Everything outside the native brain mask
        is background / 0. Returns ``(labels, fused, probabilities, native geometry)``; arrays
        ``(z, y, x)`` of the native grid.
        """
        grid = self.native_grid
        inverse = self.alignment.transform.GetInverse()  # native point -> atlas point
        reference = self.alignment.reference
        inside = sitk.GetArrayFromImage(self.brain.native) > 0

        def back(array: np.ndarray, interpolator: str, default: float = 0.0) -> np.ndarray:
            image = sitk.GetImageFromArray(np.ascontiguousarray(array))
            image.CopyInformation(reference)
            return sitk.GetArrayFromImage(resample_like(image, grid, inverse, interpolator, default))  # type: ignore[arg-type]

        native_labels = native_fused = native_probabilities = None
        if labels is not None:
            native_labels = np.where(inside, back(labels, "nearest"), 0).astype(labels.dtype)
        if fused is not None:
            native_fused = np.where(inside, back(fused.astype(np.float32), "linear"), 0.0).astype(np.float32)
        if probabilities is not None:
            channels = [back(probabilities[0].astype(np.float32), "linear", 1.0)]
            channels += [back(p.astype(np.float32), "linear") for p in probabilities[1:]]
            stacked = np.stack(channels)
            stacked[1:, ~inside] = 0.0
            stacked[0][~inside] = 1.0
            native_probabilities = (stacked / np.maximum(stacked.sum(axis=0, keepdims=True), 1e-6)).astype(np.float32)
        return native_labels, native_fused, native_probabilities, Geometry.from_image(grid)

    def coregistered(self) -> dict[str, sitk.Image]:
        """Every sequence on the reference's native grid (linear; the reference as read)."""
        grid = self.native_grid
        return {
            name: image if name == self.reference else resample_like(image, grid, self.registrations[name].transform, "linear")
            for name, image in self.native.items()
        }

    def write(self, folder: str | Path, brain_mask: bool = True) -> list[Path]:
        """Keep the intermediate results under ``folder`` (created); returns the files written.

        ``brain_mask.nii.gz`` (uint8, reference's native grid), ``coregistered_<seq>.nii.gz`` (native
        grid), ``atlas_<seq>.nii.gz`` and ``atlas_brain_mask.nii.gz`` (atlas grid),
        ``<seq>_to_<reference>.tfm`` (rigid: maps reference points to the sequence's, ITK/Slicer
        convention, i.e. it resamples the sequence onto the reference) and
        ``<reference>_to_atlas.tfm`` (affine: maps atlas points to the reference's). ``brain_mask=False``
        leaves out ``brain_mask.nii.gz`` (written beside the results by the command line).
        """
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        written: list[Path] = []

        def image(img: sitk.Image, name: str) -> None:
            path = out / name
            sitk.WriteImage(img, str(path), useCompression=True)
            written.append(path)

        if brain_mask:
            image(self.brain.native, "brain_mask.nii.gz")
        for name, img in self.coregistered().items():
            image(img, f"coregistered_{name}.nii.gz")
        for name, img in self.atlas_images.items():
            image(img, f"atlas_{name}.nii.gz")
        image(self.atlas_mask, "atlas_brain_mask.nii.gz")
        for name, result in self.registrations.items():
            path = out / f"{name}_to_{self.reference}.tfm"
            sitk.WriteTransform(result.transform, str(path))
            written.append(path)
        path = out / f"{self.reference}_to_atlas.tfm"
        sitk.WriteTransform(self.alignment.transform, str(path))
        written.append(path)
        return written


def read_exam(source: Case | Mapping[str, str | Path | sitk.Image | None] | str | Path) -> tuple[str, dict[str, sitk.Image]]:
    """The name and sequences of a raw exam: ``{modality: path or image}`` (three or four), one case folder, or a :class:`Case`.

    Files are read as they are (any grid, orientation, pixel type); a :class:`Case`'s arrays become
    images on its grid. Raises :class:`~nslfcore.data.validation.DataValidationError` (one line per
    problem) when fewer than three sequences are given or a file cannot be read or is not a 3-D image.
    """
    from nslfcore.data.discovery import find_cases
    from nslfcore.data.io import missing_file_reason
    from nslfcore.data.validation import DataValidationError
    from nslfcore.inference.missing import MIN_SEQUENCES, too_few_sequences

    if isinstance(source, Case):
        return source.name, {m: source.geometry.to_image(np.asarray(source.images[m], np.float32)) for m in source.images}
    if isinstance(source, Mapping) and all(isinstance(v, sitk.Image) for v in source.values() if v is not None):
        given = {m: source[m] for m in MODALITIES if source.get(m) is not None}
        if len(given) < MIN_SEQUENCES:
            raise DataValidationError([too_few_sequences("The inputs", [m for m in MODALITIES if m not in given], "image")])
        return "case", given  # type: ignore[return-value]
    if isinstance(source, Mapping):
        paths = {m: Path(source[m]) for m in MODALITIES if source.get(m) is not None}  # type: ignore[arg-type]
        first = next(iter(paths.values()), Path("case"))
        name = paths.get("t1ce", first).name.split(".")[0]
    else:
        folder = Path(source)
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder} is not a case folder; give a case folder or the image files.")
        cases = find_cases(folder)
        if len(cases) != 1:
            raise ValueError(f"{folder} holds {len(cases)} cases; give the folder of one case "
                             "(its t1, t1ce, t2 and flair files).")  # fmt: skip
        paths, name = dict(cases[0].images), cases[0].name
    missing = [m for m in MODALITIES if m not in paths]
    if len(paths) < MIN_SEQUENCES:
        raise DataValidationError([too_few_sequences(name, missing, "file")])
    problems, images = [], {}
    for modality, path in paths.items():
        if not path.is_file():
            problems.append(f"{missing_file_reason(path)} (the {modality} input).")
            continue
        try:
            image = sitk.ReadImage(str(path))
        except RuntimeError:
            problems.append(f"{path} is not an image SimpleITK can read (the {modality} input); give a NIfTI or NRRD file.")
            continue
        if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
            problems.append(f"{path} is not a 3-D scalar image (the {modality} input); give one 3-D volume per sequence.")
            continue
        images[modality] = image
    if problems:
        raise DataValidationError(problems)
    return name, images


def reference_sequence(sequences: Mapping[str, object]) -> str:
    """The reference of an exam with these sequences (:data:`REFERENCE_ORDER`)."""
    for name in REFERENCE_ORDER:
        if name in sequences:
            return name
    raise ValueError(f"no known sequence among {sorted(sequences)}; give t1ce, t1, t2 or flair images.")


def prepare_exam(
    images: Mapping[str, sitk.Image],
    name: str = "case",
    options: PreprocessOptions | None = None,
    progress: Progress | None = None,
) -> PreparedExam:
    """A raw exam (three or four sequences, each on its own grid) on the atlas grid (see the module docstring).

    Args:
        images: sequence name (``"t1"``, ``"t1ce"``, ``"t2"``, ``"flair"``) -> image as read (any
            grid, orientation and pixel type; the whole head or already skull-stripped).
        name: the case's name, used in messages.
        options: what to do (:class:`PreprocessOptions`; default: deepbet, no N4).
        progress: ``progress(fraction, message)`` before each step; raising in it cancels.

    Returns:
        A :class:`PreparedExam`.

    Raises:
        RegistrationError, BrainExtractionError: a step failed (one sentence naming it).
    """
    options = options or PreprocessOptions()
    report = progress or (lambda fraction, message: None)
    native = {m: images[m] for m in MODALITIES if m in images}
    reference = reference_sequence(native)
    fixed = native[reference]
    timings: dict[str, float] = {}

    start = time.perf_counter()
    registrations: dict[str, RegistrationResult] = {}
    others = [m for m in native if m != reference]
    for i, sequence in enumerate(others):
        report(0.3 * i / max(len(others), 1), f"{name}: registering {sequence} to {reference} (rigid)")
        registrations[sequence] = register_rigid(fixed, native[sequence], seed=options.seed, name=f"{name}'s {sequence}",
                                                 working_spacing_mm=RAW_WORKING_SPACING_MM)  # fmt: skip
    timings["coregister"] = time.perf_counter() - start

    report(0.3, f"{name}: extracting the brain from {reference} ({options.extractor})")
    start = time.perf_counter()
    brain = extract_brain(fixed, method=options.extractor, device=options.device, name=f"{name}'s {reference}")
    timings["brain"] = time.perf_counter() - start

    report(0.5, f"{name}: aligning {reference} to the atlas (affine)")
    start = time.perf_counter()
    stripped = sitk.Mask(sitk.Cast(fixed, sitk.sitkFloat32), brain.native)
    alignment = register_to_atlas(stripped, seed=options.seed, name=f"{name}'s {reference}")
    timings["atlas"] = time.perf_counter() - start

    report(0.75, f"{name}: resampling {len(native)} sequences onto the atlas grid")
    start = time.perf_counter()
    atlas_mask = sitk.Cast(resample_like(brain.fine, alignment.reference, alignment.transform, "nearest"), sitk.sitkUInt8)
    prepared = PreparedExam(
        name=name, native=native, reference=reference, registrations=registrations, brain=brain,
        alignment=alignment, atlas_images={}, atlas_mask=atlas_mask, timings=timings,
    )  # fmt: skip
    for sequence, image in native.items():
        to_native = prepared.atlas_to_sequence(sequence)
        moved = resample_like(sitk.Cast(image, sitk.sitkFloat32), alignment.reference, to_native, "linear")
        prepared.atlas_images[sequence] = sitk.Mask(moved, atlas_mask)
        field_of_view = sitk.Image(image.GetSize(), sitk.sitkUInt8) + 1
        field_of_view.CopyInformation(image)
        inside = sitk.GetArrayViewFromImage(resample_like(field_of_view, alignment.reference, to_native, "nearest"))
        brain_voxels = sitk.GetArrayViewFromImage(atlas_mask) > 0
        prepared.coverage[sequence] = float((inside[brain_voxels] > 0).mean()) if brain_voxels.any() else 1.0
    timings["resample"] = time.perf_counter() - start

    if options.bias_correction:
        start = time.perf_counter()
        for i, sequence in enumerate(list(prepared.atlas_images)):
            report(0.8 + 0.2 * i / len(native), f"{name}: N4 bias-field correction of {sequence}")
            corrected = correct_bias(prepared.atlas_images[sequence], atlas_mask)
            prepared.atlas_images[sequence] = sitk.Mask(corrected, atlas_mask)
        timings["bias"] = time.perf_counter() - start
    report(1.0, f"{name}: preprocessed")
    return prepared
