"""``python -m nslfcore.train ...`` (also under ``torchrun --nproc_per_node=N``): the same as ``nslf train``.

With ``torchrun`` every process joins the process group (NCCL on GPUs, gloo on CPU); rank 0 alone
logs, writes events and checkpoints.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import torch.distributed as dist

from nslfcore.commands.train import add_arguments, run


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nslfcore.train", description=__doc__.splitlines()[0])
    add_arguments(parser)
    try:
        return run(parser.parse_args(argv))
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
