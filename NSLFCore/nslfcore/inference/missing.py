"""A missing sequence (issue 31): which one, and what segmenting without it costs, in one sentence.

NSLF runs on any three of the four sequences: the missing one is an all-zero channel after
normalisation and gets fusion weight 0 (:meth:`nslfcore.models.fcd.FusionDecoder.combine`), so the
fused volume is a convex combination of the three others. What that costs is measured, not
guessed: :data:`MISSING_SEQUENCE_COST` holds the Dice the model :data:`COST_MODEL` lost per missing
sequence on held-out phantom cases (``benchmarks/missing_sequence.py``, results in
``benchmarks/results/missing_sequence.json``). Every message a user sees about a missing sequence
(``nslf run``, the cohort summary, the Slicer panel, the batch script) comes from
:func:`missing_sentence`.

Example:
    >>> missing_sentence("flair", "nslf-phantom-fast-v4", fuse=False).split(";")[0]
    'FLAIR is missing: segmented from T1, T1ce and T2'
"""

from __future__ import annotations

from nslfcore import MIN_SEQUENCES, MODALITIES

#: How messages spell each modality.
DISPLAY_NAMES: dict[str, str] = {"t1": "T1", "t1ce": "T1ce", "t2": "T2", "flair": "FLAIR"}
__all__ = ["COST_CASES", "COST_MODEL", "DISPLAY_NAMES", "MIN_SEQUENCES", "MISSING_SEQUENCE_COST", "missing_sentence",
           "too_few_sequences"]  # fmt: skip
#: The model :data:`MISSING_SEQUENCE_COST` was measured for.
COST_MODEL = "nslf-phantom-fast-v4"
#: How many held-out phantom cases the costs are the mean over.
COST_CASES = 5
#: Mean Dice (all four sequences) minus mean Dice (this one missing), per region, of :data:`COST_MODEL`
#: on :data:`COST_CASES` held-out phantom cases (``generate_case(seed=2000, index=1000..1004)``),
#: measured by ``benchmarks/missing_sequence.py`` (``benchmarks/results/missing_sequence.json``).
#: ``nslf-phantom-fast-v4`` was trained before sequence dropout (it always saw four sequences), so
#: these are the costs of a model that never learnt to do without one; re-measure them with the
#: benchmark for the next default model, which is trained with sequence dropout.
#: With all four its mean Dice there was WT 0.915, TC 0.963, ET 0.894. T1ce carries the enhancement
#: (without it ET is all but lost), FLAIR the edema (without it WT falls to 0.36).
MISSING_SEQUENCE_COST: dict[str, dict[str, float]] = {
    "t1": {"WT": 0.098, "TC": 0.136, "ET": 0.220},
    "t1ce": {"WT": 0.144, "TC": 0.374, "ET": 0.891},
    "t2": {"WT": 0.189, "TC": 0.064, "ET": 0.074},
    "flair": {"WT": 0.554, "TC": 0.099, "ET": 0.148},
}


def _listed(names: list[str], word: str = "and") -> str:
    """``"A, B and C"`` (``word``: ``"and"`` or ``"or"``)."""
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + f" {word} " + names[-1]


def missing_sentence(missing: str, model_id: str | None = None, fuse: bool = True, segment: bool = True) -> str:
    """The one sentence telling a user which sequence is missing and what that costs.

    Args:
        missing: the missing modality (one of :data:`nslfcore.MODALITIES`).
        model_id: the model used (its registry id or file stem); the cost is quoted as measured for
            :data:`COST_MODEL` and said to be unmeasured for another model.
        fuse, segment: what was computed (the cost is a segmentation cost; a fusion alone has none quoted).

    Example:
        >>> missing_sentence("t1", "mine", segment=False)
        'T1 is missing: fused from T1ce, T2 and FLAIR.'
    """
    if missing not in MODALITIES:
        raise ValueError(f"{missing!r} is not a modality; use one of {', '.join(MODALITIES)}.")
    others = _listed([DISPLAY_NAMES[m] for m in MODALITIES if m != missing])
    done = "fused and segmented" if fuse and segment else "fused" if fuse else "segmented"
    head = f"{DISPLAY_NAMES[missing]} is missing: {done} from {others}"
    if not segment:
        return head + "."
    cost = MISSING_SEQUENCE_COST[missing]
    dice = f"about {cost['WT']:.2f} WT, {cost['TC']:.2f} TC and {cost['ET']:.2f} ET Dice"
    where = f"on {COST_CASES} held-out phantoms"
    if model_id == COST_MODEL:
        return f"{head}; {where} this costs {dice} with model {COST_MODEL}."
    other = "the model used" if model_id is None else f"model {model_id}"
    return f"{head}; {where} this cost {dice} with model {COST_MODEL} (not measured for {other})."


def too_few_sequences(name: str, missing: list[str], how: str = "input") -> str:
    """The one-sentence refusal of a case lacking more than one sequence (``how``: ``"input"``, ``"file"``, ``"volume"``)."""
    need = ("one", "two", "three", "four")[max(len(missing) - (len(MODALITIES) - MIN_SEQUENCES), 1) - 1]
    return (f"{name}: no {_listed(missing, 'or')} {how}; NSLF needs at least {MIN_SEQUENCES} of the four sequences "
            f"({', '.join(MODALITIES)}), so add at least {need} of them.")  # fmt: skip
