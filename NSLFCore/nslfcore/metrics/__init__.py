"""Evaluation metrics of NSLF: fusion quality (SSIM, PSNR, NMI, SFR) and segmentation (per region).

Plain functions, no training-loop knowledge; single metrics return Python floats, the two
``*_metrics`` functions dictionaries of them. One family per module:

* ``fusion.py`` -- :func:`ssim`, :func:`psnr`, :func:`nmi`, :func:`spatial_frequency`,
  :func:`spatial_frequency_ratio` and :func:`fusion_metrics`;
* ``segmentation.py`` -- :func:`overlap_metrics`, :func:`hd95` (definitions ``"max"``, MONAI's, and
  ``"pooled"``, medpy's: :data:`HD95_DEFINITIONS`) and :func:`segmentation_metrics`;
* ``fusion_2d.py`` -- the paper's 2-D evaluation: :func:`fusion_metrics_2d` (FSIM, VIFP, NMI, IFC
  on axial slice pairs) and :func:`select_axial_slices`; needs ``nslfcore[metrics2d]`` when called;
* ``ifc.py`` -- :func:`ifc`, the information fidelity criterion on a wavelet GSM model;
* ``conspicuity.py`` -- lesion conspicuity: :func:`lesion_cnr` (contrast-to-noise of a lesion
  against a reference tissue), :func:`normal_white_matter` (NAWM from T1) and
  :func:`conspicuity_ratio` (the fused volume's CNR over the best source's);
* ``utils.py`` -- the :data:`Array` type and the shape checks all share.

Arrays: every volume is 3-D ``(z, y, x)`` (the order of a SimpleITK array and of nslfcore tensors
without their batch/channel axes), as a numpy array or a torch tensor (any device; SSIM, PSNR and
SF run on the tensor's device in float64, NMI and the overlap counts on the CPU). Geometry follows
ITK: ``spacing`` is ``(x, y, z)`` in millimetres, reversed here to ``(z, y, x)`` before it touches an
array axis. Only HD95 uses the spacing; the fusion metrics work in voxel units.

Fusion (:func:`fusion_metrics`): the fused volume against each source (the four modalities, order
:data:`nslfcore.MODALITIES` for a standard stack), averaged over the sources; inputs are expected
in ``[0, data_range]`` (``[0, 1]`` after the ``"paper"`` normalisation of
:func:`nslfcore.data.transforms.normalize`) and are not rescaled here. :func:`ssim`, :func:`psnr`,
:func:`nmi` are per source; :func:`spatial_frequency_ratio` (SFR) is joint over the sources.

Segmentation (:func:`segmentation_metrics`): internal label maps (0 background, 1 NCR, 2 ED,
3 ET; :mod:`nslfcore.data.labels`) are turned into the regions ET = {3}, TC = {1, 3},
WT = {1, 2, 3} and scored with :func:`overlap_metrics` (Dice, Jaccard, sensitivity,
specificity, accuracy; over the whole volume and, given a brain mask, over the brain) and
:func:`hd95`, with the BraTS conventions for empty regions.
"""

from nslfcore.metrics.conspicuity import conspicuity_ratio, lesion_cnr, normal_white_matter
from nslfcore.metrics.fusion import (
    DIAGONAL_WEIGHT,
    NMIMethod,
    fusion_metrics,
    nmi,
    psnr,
    spatial_frequency,
    spatial_frequency_ratio,
    ssim,
)
from nslfcore.metrics.fusion_2d import METRICS_2D, fusion_metrics_2d, select_axial_slices
from nslfcore.metrics.ifc import ifc
from nslfcore.metrics.segmentation import (
    HD95_DEFINITIONS,
    HD95_EMPTY,
    HD95Definition,
    hd95,
    hd95_key,
    overlap_metrics,
    segmentation_metrics,
)
from nslfcore.metrics.utils import Array

__all__ = [
    "Array",
    "NMIMethod",
    "DIAGONAL_WEIGHT",
    "ssim",
    "psnr",
    "nmi",
    "spatial_frequency",
    "spatial_frequency_ratio",
    "fusion_metrics",
    "METRICS_2D",
    "fusion_metrics_2d",
    "select_axial_slices",
    "ifc",
    "lesion_cnr",
    "normal_white_matter",
    "conspicuity_ratio",
    "HD95_EMPTY",
    "HD95_DEFINITIONS",
    "HD95Definition",
    "hd95_key",
    "overlap_metrics",
    "hd95",
    "segmentation_metrics",
]
