"""A float64 network runs through whole-case inference in float64, sequential or not (issue 16 point 6)."""

from __future__ import annotations

import numpy as np
import torch

from nslfcore.config import PRESETS
from nslfcore.data.phantom import generate_tiny_case
from nslfcore.inference import run
from nslfcore.models import NSLF


def test_a_float64_nslf_gives_the_same_labels_sequentially_and_whole():
    torch.manual_seed(2)
    net = NSLF(PRESETS["compact"]).double().eval()
    case = generate_tiny_case(seed=4, size=(24, 32, 32))
    whole = run(case, net, device="cpu", mode="whole", precision="auto")
    sequential = run(case, net, device="cpu", mode="sequential", precision="auto")
    assert whole.precision == sequential.precision == "fp64" and sequential.mode == "sequential"
    assert all(p.dtype == torch.float64 for p in net.parameters())
    assert np.array_equal(whole.labels, sequential.labels)
    np.testing.assert_allclose(whole.fused, sequential.fused, atol=1e-6)
