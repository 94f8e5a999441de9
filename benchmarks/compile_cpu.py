"""Does ``torch.compile`` pay for CPU inference? The shipped model, eager against compiled, same process.

The network pass of :func:`nslfcore.inference.run` (``fuse_and_segment``) on a random input of the
benchmark's brain-box size ``(1, 4, 155, 181, 139)`` (batch, modality, z, y, x), channels-last-3d,
under bf16 autocast where the CPU has native bf16 (else fp32), inference mode. One compilation
(``torch.compile(dynamic=False)``, inductor, timed), then ``--rounds`` interleaved eager / compiled
calls; median ratio and the share of voxels whose label agrees.

    python benchmarks/compile_cpu.py [--rounds 3]

Writes ``benchmarks/results/compile_cpu.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from nslfcore.inference.precision import autocast, resolve_precision
from nslfcore.model_store import load_model

BOX = (1, 4, 155, 181, 139)
RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    model, info = load_model(None)
    model.eval().to(memory_format=torch.channels_last_3d)  # type: ignore[call-overload]
    torch.manual_seed(0)
    x = torch.rand(*BOX).contiguous(memory_format=torch.channels_last_3d)
    cpu = torch.device("cpu")
    dtype = resolve_precision("auto", cpu)
    compiled_pass = torch.compile(model.fuse_and_segment, dynamic=False)

    def call(fn):
        with torch.inference_mode(), autocast(cpu, dtype):
            start = time.perf_counter()
            out = fn(x)
            return time.perf_counter() - start, out

    call(model.fuse_and_segment)  # warm-up
    compile_s, _ = call(compiled_pass)
    eager_s, compiled_s = [], []
    for _ in range(args.rounds):
        t, eager_out = call(model.fuse_and_segment)
        eager_s.append(t)
        t, compiled_out = call(compiled_pass)
        compiled_s.append(t)
    agreement = float((eager_out[1].argmax(1) == compiled_out[1].argmax(1)).float().mean())
    result = {"benchmark": "compile_cpu", "date": time.strftime("%Y-%m-%d %H:%M"), "model": info.id, "box": BOX,
              "precision": str(dtype).replace("torch.", ""), "threads": torch.get_num_threads(), "torch": torch.__version__,
              "first_compiled_call_s": compile_s, "eager_s": eager_s, "compiled_s": compiled_s,
              "speedup": statistics.median(eager_s) / statistics.median(compiled_s), "label_agreement": agreement}  # fmt: skip
    path = RESULTS / "compile_cpu.json"
    path.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
