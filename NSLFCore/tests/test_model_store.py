"""Model registry: checksums, refusal of damaged files, explicit file:// download with verification."""

from __future__ import annotations

import json

import pytest
import torch

from nslfcore.config import PRESETS
from nslfcore.model_store import download_model, list_models, load_model, resolve_model, sha256_file
from nslfcore.models import NSLF
from nslfcore.training.checkpoint import atomic_torch_save, new_checkpoint


@pytest.fixture()
def registry(tmp_path):
    torch.manual_seed(1)
    model = NSLF(PRESETS["compact"])
    folder = tmp_path / "Models"
    path = folder / "tiny-v1.pt"
    atomic_torch_save(new_checkpoint(kind="weights", config=model.config.to_json(), stage=3, model=model.state_dict()), path)
    entry = {"id": "tiny-v1", "file": path.name, "sha256": sha256_file(path), "title": "test model", "license": "Apache-2.0"}
    (folder / "models.json").write_text(json.dumps({"models": [entry]}))
    return folder, model


def test_registered_model_loads_after_its_checksum(registry):
    folder, original = registry
    [info] = list_models(folder)
    assert info.id == "tiny-v1" and info.extra["license"] == "Apache-2.0"
    model, loaded_info = load_model("tiny-v1", folder=folder)
    assert loaded_info == info and not model.training
    for key, value in original.state_dict().items():
        assert torch.equal(value, model.state_dict()[key])


def test_tampered_registered_file_is_refused(registry):
    folder, _ = registry
    path = folder / "tiny-v1.pt"
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="fails its checksum"):
        load_model("tiny-v1", folder=folder)


def test_unknown_model_and_urls_need_an_explicit_action(registry):
    folder, _ = registry
    with pytest.raises(FileNotFoundError, match="tiny-v1"):
        resolve_model("nope", folder)
    with pytest.raises(ValueError, match="download it first"):
        resolve_model("https://example.org/model.pt", folder)


def test_file_url_download_is_verified_and_reports_progress(registry, tmp_path):
    folder, _ = registry
    source = folder / "tiny-v1.pt"
    url = source.resolve().as_uri()
    seen: list[float] = []
    cache = tmp_path / "cache"
    path = download_model(url, sha256_file(source), cache_dir=cache, progress=lambda f, m: seen.append(f))
    assert path.read_bytes() == source.read_bytes() and seen[-1] == 1.0
    load_model(path)  # a downloaded file loads by path
    other = tmp_path / "cache2"
    with pytest.raises(ValueError, match="fails its checksum"):
        download_model(url, "0" * 64, cache_dir=other)
    assert list(other.iterdir()) == []  # nothing left behind
