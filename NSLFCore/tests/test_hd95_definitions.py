"""HD95's two definitions: ``"max"`` (MONAI) and ``"pooled"`` (medpy, the authors' scripts).

Hand-computed cases, the empty-mask conventions, anisotropic spacing, and a cross-check of both
against a brute-force reference (explicit surface voxel lists, ``scipy.spatial.distance.cdist``).
"""

import math

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from nslfcore.evaluation import summary_markdown
from nslfcore.metrics import HD95_DEFINITIONS, HD95_EMPTY, hd95, hd95_key, segmentation_metrics


def brute_force_hd95(pred, ref, spacing_xyz=(1.0, 1.0, 1.0)):
    """(max, pooled) from explicit surface voxel lists: a voxel is on the surface when one of its six
    face neighbours is outside the mask or outside the array; distances between all pairs by cdist."""

    def surface_points(mask):
        padded = np.pad(mask, 1)
        inner = padded[1:-1, 1:-1, 1:-1]
        outside_neighbour = np.zeros_like(mask)
        for axis in range(3):
            for step in (-1, 1):
                outside_neighbour |= ~np.roll(padded, step, axis=axis)[1:-1, 1:-1, 1:-1]
        return np.argwhere(inner & outside_neighbour) * np.asarray(spacing_xyz[::-1])

    p, r = surface_points(pred.astype(bool)), surface_points(ref.astype(bool))
    distances = cdist(p, r)
    forward, backward = distances.min(axis=1), distances.min(axis=0)
    one_way = max(np.percentile(forward, 95), np.percentile(backward, 95))
    return float(one_way), float(np.percentile(np.concatenate([forward, backward]), 95))


def both(pred, ref, spacing=(1.0, 1.0, 1.0)):
    return hd95(pred, ref, spacing, "max"), hd95(pred, ref, spacing, "pooled")


def test_two_single_voxels_at_a_known_distance():
    # Each mask is one voxel, its own surface; both one-way lists are [d], so max = pooled = d.
    a, b = np.zeros((4, 3, 8), bool), np.zeros((4, 3, 8), bool)
    a[0, 1, 1], b[0, 1, 4] = True, True  # 3 voxels apart along x
    assert both(a, b) == pytest.approx((3.0, 3.0))
    # (x, y, z) spacing (2, 1, 1): 3 voxels along x are 6 mm.
    assert both(a, b, (2.0, 1.0, 1.0)) == pytest.approx((6.0, 6.0))
    # Apart by (dz, dx) = (3, 3) voxels with z spacing 2.5 mm: sqrt(7.5^2 + 3^2) mm.
    c = np.zeros_like(a)
    c[3, 1, 4] = True
    assert both(a, c, (1.0, 1.0, 2.5)) == pytest.approx((math.hypot(7.5, 3.0),) * 2)


def test_cube_and_shifted_cube():
    # A: 3 x 3 x 3 cube at x = 1..3; B: the same cube shifted by 2 along x (x = 3..5). A cube's surface
    # is its 26 voxels but the centre. A's surface to B's: the x = 1 face (9 voxels) is 2 from B's
    # x = 3 face, the x = 2 ring (8) is 1 from it, the x = 3 face (9) lies on it: 9 x 0, 8 x 1, 9 x 2.
    # P95 of these 26 sorted values: position 0.95 * 25 = 23.75, between two 2s -> 2. B -> A is the
    # mirror image, so max = 2; pooled: 52 values (18 x 0, 16 x 1, 18 x 2), position 48.45 -> 2.
    a, b = np.zeros((5, 5, 8), bool), np.zeros((5, 5, 8), bool)
    a[1:4, 1:4, 1:4], b[1:4, 1:4, 3:6] = True, True
    assert both(a, b) == pytest.approx((2.0, 2.0))
    # The shift is along x: an x spacing of 0.5 mm halves every distance; a z spacing changes nothing.
    assert both(a, b, (0.5, 1.0, 3.0)) == pytest.approx((1.0, 1.0))


def test_pooled_is_lower_where_the_directions_differ():
    # In a (1, 1, n) array every mask voxel is on the surface (its z and y neighbours are outside the
    # array). A = x 0..9, B = x 0..19. A -> B: ten 0s, P95 = 0. B -> A: ten 0s and 1, 2, ..., 10;
    # 20 values, position 0.95 * 19 = 18.05 between 9 and 10 -> 9.05 = max. Pooled: twenty 0s and
    # 1..10, 30 values, position 0.95 * 29 = 27.55, between the 28th (8) and 29th (9) -> 8.55.
    a, b = np.zeros((1, 1, 24), bool), np.zeros((1, 1, 24), bool)
    a[0, 0, :10], b[0, 0, :20] = True, True
    assert both(a, b) == pytest.approx((9.05, 8.55))
    assert both(b, a) == pytest.approx((9.05, 8.55))  # symmetric in its arguments


def test_pooled_can_pass_max_by_the_interpolation_on_tiny_lists():
    # A = x {0, 10}, B = x {0, 20} (all surface, as above). A -> B: [0, 10]; B -> A: [0, 10]. One-way
    # P95: position 0.95 between 0 and 10 -> 9.5 = max. Pooled [0, 0, 10, 10]: position 2.85 between
    # two 10s -> 10. The nearest-rank percentile (10 for all three) keeps pooled <= max; linear
    # interpolation, which both MONAI and medpy use, does not on lists this short.
    a, b = np.zeros((1, 1, 24), bool), np.zeros((1, 1, 24), bool)
    a[0, 0, [0, 10]], b[0, 0, [0, 20]] = True, True
    assert both(a, b) == pytest.approx((9.5, 10.0))


def random_masks(rng, shape=(10, 12, 11)):
    """Two overlapping random blobs: thresholded smoothed noise."""
    from scipy.ndimage import gaussian_filter

    noise = gaussian_filter(rng.standard_normal((2, *shape)), (0, 1.5, 1.5, 1.5))
    return noise[0] > 0.05, noise[1] > 0.05


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (0.8, 1.2, 2.5)])
def test_both_definitions_match_brute_force(spacing):
    rng = np.random.default_rng(0)
    for _ in range(6):
        pred, ref = random_masks(rng)
        expected_max, expected_pooled = brute_force_hd95(pred, ref, spacing)
        assert hd95(pred, ref, spacing, "max") == pytest.approx(expected_max, rel=1e-5)  # MONAI: float32 distances
        assert hd95(pred, ref, spacing, "pooled") == pytest.approx(expected_pooled, rel=1e-9)


def test_pooled_not_above_max_on_random_masks():
    rng = np.random.default_rng(1)
    lower = 0
    for _ in range(10):
        pred, ref = random_masks(rng)
        maximum, pooled = both(pred, ref, (1.0, 1.0, 2.0))
        assert pooled <= maximum + 1e-6
        lower += pooled < maximum - 1e-6
    assert lower >= 5  # and usually strictly lower


def test_empty_mask_conventions_are_the_same():
    empty, blob = np.zeros((6, 6, 6), bool), np.zeros((6, 6, 6), bool)
    blob[2:4, 2:4, 2:4] = True
    for definition in ("max", "pooled"):
        assert hd95(empty, empty, definition=definition) == 0.0
        assert hd95(empty, blob, definition=definition) == HD95_EMPTY
        assert hd95(blob, empty, definition=definition) == HD95_EMPTY
        assert hd95(blob, blob, definition=definition) == 0.0


def test_mask_touching_the_array_border():
    # Voxels beyond the array count as outside for both definitions (a full array has a surface).
    full, half = np.ones((4, 5, 6), bool), np.zeros((4, 5, 6), bool)
    half[:, :, :3] = True
    assert both(full, half) == pytest.approx(brute_force_hd95(full, half), rel=1e-6)


def test_unknown_definition_is_refused():
    a = np.ones((2, 2, 2), bool)
    with pytest.raises(ValueError, match="'max' or 'pooled'"):
        hd95(a, a, definition="mean")  # type: ignore[arg-type]


def test_segmentation_metrics_and_summary_name_the_definition():
    pred = np.zeros((8, 8, 8), np.uint8)
    ref = pred.copy()
    pred[2:6, 2:6, 2:6], ref[2:6, 2:6, 3:7] = 3, 3
    pooled = segmentation_metrics(pred, ref, hd95_definition="pooled")
    assert hd95_key("pooled") in pooled["ET"] and "hd95" not in pooled["ET"]
    assert pooled["ET"]["hd95_pooled"] == hd95(pred == 3, ref == 3, definition="pooled")
    assert "hd95" in segmentation_metrics(pred, ref)["ET"]  # the default stays MONAI's, under its old name

    def row(definition):
        metrics = segmentation_metrics(pred, ref, hd95_definition=definition)
        fusion = {"ssim": 0.5, "psnr": 20.0, "nmi": 1.0, "sfr": 0.5}
        return {"case": "c"} | fusion | {f"{g}_{k}": v for g, m in metrics.items() for k, v in m.items()}

    text = summary_markdown([row("pooled")], "t")
    assert "HD95 pooled (mm)" in text and HD95_DEFINITIONS["pooled"] in text
    text = summary_markdown([row("max")], "t", baseline_rows=[row("max")])
    assert "| HD95 (mm) |" in text and HD95_DEFINITIONS["max"] in text
    with pytest.raises(ValueError, match="different HD95 definitions"):
        summary_markdown([row("max")], "t", baseline_rows=[row("pooled")])
