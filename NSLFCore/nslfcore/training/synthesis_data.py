"""Training data from a label bank (``nslf train --data synth:FOLDER``): crops synthesised on the fly.

Training crops come from :class:`~nslfcore.synthesis.dataset.SynthesisCropDataset`: a fresh case per
item, generated on the training device when that is CUDA and the data loader has no workers (so a
short GPU run is not starved by CPU-side generation), else on the CPU in the workers.

Validation needs fixed cases: the last ``max(2, case_validation_max_cases)`` maps of the bank are
synthesised once (without the extra warp, with the images ``synthesise_case(bank seed, index)``
would draw) and written in the BraTS 2023 layout into ``<run>/data/synth-valid``, which the
normal folder path then reads (crop validation and whole-case validation, as for real data).
They are held out of training when the bank keeps at least as many maps for training; a smaller
bank validates on training maps (other images of them), with a warning.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from nslfcore import MODALITIES
from nslfcore.data.case import Case
from nslfcore.distributed import DistributedContext
from nslfcore.synthesis.bank import LabelBank, read_label_bank
from nslfcore.synthesis.dataset import SynthesisCropDataset
from nslfcore.training.options import TrainingOptions

#: The validation cases' folder inside a run folder.
VALID_FOLDER = Path("data") / "synth-valid"


@dataclass(frozen=True)
class SynthesisData:
    """A label bank split into training and validation maps (bank positions)."""

    bank: LabelBank
    train_positions: tuple[int, ...]
    valid_positions: tuple[int, ...]

    @classmethod
    def open(cls, folder: Path, options: TrainingOptions) -> SynthesisData:
        """Read the bank in ``folder`` and split it; raises :class:`~nslfcore.synthesis.bank.LabelBankError`
        (a ``ValueError``, one sentence) when it cannot be read."""
        bank = read_label_bank(folder)
        count = min(len(bank), max(2, options.case_validation_max_cases))
        valid = tuple(range(len(bank) - count, len(bank)))
        if len(bank) - count >= count:
            train = tuple(range(len(bank) - count))
        else:
            train = tuple(range(len(bank)))
            warnings.warn(f"the label bank {folder} has {len(bank)} maps: validation uses {count} of the training maps "
                          f"(other images of them); write at least {2 * count} to hold them out.", stacklevel=2)  # fmt: skip
        return cls(bank, train, valid)

    def split(self, valid_names: list[str]) -> dict[str, list[str]]:
        """The run's split: training map names and validation case names."""
        return {"train": [self.bank.entries[p].name for p in self.train_positions], "valid": valid_names}

    def validation_folder(self, run_dir: Path, device: torch.device, context: DistributedContext) -> Path:
        """Write the validation cases into ``run_dir / VALID_FOLDER`` once (rank 0; kept on resume); returns the folder."""
        from nslfcore.synthesis.generator import case_name, synthesise_images, torch_generator, write_synthetic_case
        from nslfcore.synthesis.labels import target_classes

        folder = run_dir / VALID_FOLDER
        marker = folder / ".complete"
        if context.is_main and not marker.exists():
            for position in self.valid_positions:
                entry = self.bank.entries[position]
                labels = self.bank.full_labels(position)
                images, _ = synthesise_images(labels, torch_generator(self.bank.seed, entry.index, 1), device)
                stack = images.cpu().numpy()
                case = Case(name=case_name(entry.index), images={m: stack[c] for c, m in enumerate(MODALITIES)},
                            label=target_classes(labels), geometry=self.bank.geometry)  # fmt: skip
                write_synthetic_case(case, folder)
            marker.write_text(json.dumps({"bank": str(self.bank.folder), "seed": self.bank.seed,
                                          "maps": [self.bank.entries[p].name for p in self.valid_positions]}))  # fmt: skip
        if context.active:
            dist.barrier()
        return folder

    def train_set(self, crop: tuple[int, int, int], options: TrainingOptions, device: torch.device) -> SynthesisCropDataset:
        """The training crops of ``crop`` ``(z, y, x)``: generated on ``device`` when it is CUDA and there are no
        data-loader workers, else on the CPU."""
        where = device if device.type == "cuda" and options.num_workers == 0 else torch.device("cpu")
        return SynthesisCropDataset(self.bank, crop, self.train_positions, options.tumour_fraction, options.et_fraction,
                                    options.sequence_dropout, options.samples_per_case, options.seed, where)  # fmt: skip
