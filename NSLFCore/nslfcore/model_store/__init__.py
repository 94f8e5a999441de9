"""Trained NSLF models for inference: the registry, checksums, downloads, and model files.

One file per job: :mod:`~nslfcore.model_store.registry` (``models.json``, :class:`ModelInfo`),
:mod:`~nslfcore.model_store.checksums` (SHA-256), :mod:`~nslfcore.model_store.download` (explicit,
verified downloads into a cache), :mod:`~nslfcore.model_store.resolve` (a model id, file or URL
to a local file) and :mod:`~nslfcore.model_store.files` (reading a model file into a network).

A *model file* is an NSLF weights checkpoint (:mod:`nslfcore.training.checkpoint`; ``nslf train``
writes ``stageN_best.pt``): a plain dictionary with ``format`` ``"nslf-checkpoint"``, ``config``
(the :class:`~nslfcore.config.NSLFConfig` as JSON), ``stage``, ``epoch`` and ``model`` (the state
dict). It is read with ``torch.load(weights_only=True)`` only, so a file that would need full
pickle (custom classes, code) is refused, as are truncated or damaged files.

The *registry* ``models.json`` lists the shipped models. It lives in ``Resources/Models`` of the
repository (``Path(nslfcore.__file__).parents[2] / "Resources" / "Models"``), or in the folder named
by the environment variable ``NSLF_MODELS_DIR``, or in a folder passed as ``models_dir``::

    {
      "default": "nslf-compact",                      # optional: the model used when none is named
      "models": [
        {
          "id": "nslf-compact",
          "title": "NSLF compact (BraTS 2021)",
          "description": "...",
          "file": "nslf-compact.pt",                  # relative to the registry's folder
          "sha256": "<64 hex digits>",
          "size_bytes": 13712345,
          "config": {...},                            # NSLFConfig.to_dict() of the file
          "inputs": {"t1": ["*_t1.nii.gz", "*-t1n.nii.gz"], ...},
          "labels": {"0": "background", "1": "NCR", "2": "ED", "4": "ET"},
          "license": "Apache-2.0",
          "training": {"data": "...", "command": "nslf train ..."},
          "evaluation": {...},
          "url": "https://..."                        # optional: where to download the file
        }
      ]
    }

Registry entries are verified against ``size_bytes`` and ``sha256`` before loading. Nothing is
ever downloaded unless asked for (:func:`download_model`, or ``download=True``); downloads go to
a cache folder (``NSLF_CACHE_DIR``, default ``~/.cache/nslf/models``), are checked against their
SHA-256 and written atomically. A URL that is not in the registry names its checksum in a
fragment: ``https://host/model.pt#sha256=<64 hex digits>``.

Only the registry, checksums and downloads work without torch; loading imports it.

Example:
    >>> model, info = load_model("path/to/stage3_best.pt", device="cpu")  # doctest: +SKIP
    >>> info.stage, model.config.name  # doctest: +SKIP
    (3, 'compact')
"""

from nslfcore.model_store.checksums import sha256_file, verify
from nslfcore.model_store.download import CACHE_DIR_ENV, Progress, cache_folder, cached_path, download_model
from nslfcore.model_store.files import load_model, save_model
from nslfcore.model_store.registry import (
    MODELS_DIR_ENV,
    REGISTRY_NAME,
    ModelError,
    ModelInfo,
    default_model,
    list_models,
    registry_folder,
)
from nslfcore.model_store.resolve import resolve_model

__all__ = [
    "CACHE_DIR_ENV",
    "MODELS_DIR_ENV",
    "REGISTRY_NAME",
    "ModelError",
    "ModelInfo",
    "Progress",
    "cache_folder",
    "cached_path",
    "default_model",
    "download_model",
    "list_models",
    "load_model",
    "registry_folder",
    "resolve_model",
    "save_model",
    "sha256_file",
    "verify",
]
