"""Model store: registry, SHA-256 verification, refusal of damaged or unsafe files, explicit verified downloads."""

from __future__ import annotations

import json
import shutil
import warnings

import pytest
import torch

from nslfcore.config import PRESETS
from nslfcore.model_store import (
    ModelError,
    cached_path,
    download_model,
    list_models,
    load_model,
    resolve_model,
    save_model,
    sha256_file,
)
from nslfcore.models import NSLF
from nslfcore.training.checkpoint import atomic_torch_save, new_checkpoint


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A compact model with random weights and its file."""
    torch.manual_seed(1)
    model = NSLF(PRESETS["compact"])
    path = tmp_path_factory.mktemp("weights") / "tiny-v1.pt"
    save_model(model, path, stage=3, epoch=1, best_metric=None)
    return model, path


def _entry(path, **changes) -> dict:
    entry = {
        "id": "tiny-v1", "title": "test model", "description": "random weights", "file": path.name,
        "sha256": sha256_file(path), "size_bytes": path.stat().st_size, "config": PRESETS["compact"].to_dict(),
        "inputs": {"t1": ["*_t1.nii.gz"], "t1ce": ["*_t1ce.nii.gz"], "t2": ["*_t2.nii.gz"], "flair": ["*_flair.nii.gz"]},
        "labels": {"0": "background", "1": "NCR", "2": "ED", "4": "ET"}, "license": "Apache-2.0",
        "training": {"data": "none", "command": "none"}, "evaluation": {},
    }  # fmt: skip
    return {**entry, **changes}


@pytest.fixture()
def registry(weights, tmp_path):
    """A registry folder holding a copy of the model file, listed with its checksum, as the default."""
    folder = tmp_path / "Models"
    folder.mkdir()
    path = folder / "tiny-v1.pt"
    shutil.copy(weights[1], path)
    (folder / "models.json").write_text(json.dumps({"default": "tiny-v1", "models": [_entry(path)]}))
    return folder


def _one_sentence(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message and "Traceback" not in message and message.endswith("."), message
    return message


def test_registered_model_loads_after_its_checksum(weights, registry):
    original, _ = weights
    [info] = list_models(registry)
    assert (info.id, info.license, info.source) == ("tiny-v1", "Apache-2.0", "registry")
    assert info.inputs["t1"] == ["*_t1.nii.gz"] and info.labels["4"] == "ET"
    model, loaded = load_model("tiny-v1", models_dir=registry)
    assert not model.training and loaded.stage == 3 and loaded.config == PRESETS["compact"].to_dict()
    for key, value in original.state_dict().items():
        assert torch.equal(value, model.state_dict()[key])
    assert load_model(None, models_dir=registry)[1].id == "tiny-v1"  # the registry's default


def test_registry_folder_from_the_environment_and_no_registry(registry, tmp_path, monkeypatch):
    monkeypatch.setenv("NSLF_MODELS_DIR", str(registry))
    assert [m.id for m in list_models()] == ["tiny-v1"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert list_models(empty) == []
    with pytest.raises(ModelError, match="no default model") as error:
        load_model(None, models_dir=empty)
    _one_sentence(error)
    with pytest.raises(ModelError, match="no models are installed") as error:
        resolve_model("nslf-default", models_dir=empty)
    _one_sentence(error)
    with pytest.raises(ModelError, match="'tiny-v1'") as error:  # lists the known ids
        resolve_model("nope", models_dir=registry)
    with pytest.raises(ModelError, match="does not exist"):
        resolve_model(tmp_path / "absent.pt", models_dir=registry)
    (empty / "models.json").write_text('{"models": [{"id": "x"}]}')
    with pytest.raises(ModelError, match="needs an \"id\" and a \"file\""):
        list_models(empty)


@pytest.mark.parametrize("damage", ["flipped byte", "truncated"])
def test_tampered_registered_file_is_refused(registry, damage):
    path = registry / "tiny-v1.pt"
    data = bytearray(path.read_bytes())
    if damage == "flipped byte":
        data[len(data) // 2] ^= 0xFF
    else:
        data = data[: len(data) // 2]
    path.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="SHA-256" if damage == "flipped byte" else "bytes, not the expected") as error:
        load_model("tiny-v1", models_dir=registry)
    assert str(path) in _one_sentence(error) and "again" in str(error.value)


def test_damaged_or_unsafe_model_files_are_refused(weights, tmp_path):
    model, path = weights
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[:5000])
    pickled = tmp_path / "pickled.pt"
    torch.save({"format": "nslf-checkpoint", "config": model.config.to_json(), "model": torch.nn.Linear(2, 2)}, pickled)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a model " * 100)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": model.state_dict()}, foreign)  # loads weights-only, but is no NSLF checkpoint
    mismatched = tmp_path / "mismatched.pt"
    paper = PRESETS["paper"].to_json()
    atomic_torch_save(new_checkpoint(kind="weights", config=paper, stage=3, model=model.state_dict()), mismatched)
    cases = [(truncated, "truncated or damaged"), (pickled, "unsafe"), (junk, "truncated or damaged"),
             (foreign, "not an NSLF checkpoint"), (mismatched, "does not match its own configuration")]  # fmt: skip
    for bad, message in cases:
        with pytest.raises(ModelError, match=message) as error:
            load_model(bad)
        assert str(bad) in _one_sentence(error)


def test_a_model_without_stage_3_loads_with_a_warning(weights, tmp_path):
    model, _ = weights
    path = tmp_path / "stage2_best.pt"
    save_model(model, path, stage=2, epoch=1, best_metric=None)
    with pytest.warns(UserWarning, match="segmentation is untrained"):
        _, info = load_model(path)
    assert info.stage == 2 and info.source == "file"
    recorded = tmp_path / "stage3_then_1.pt"  # what trained_stages says wins over stage: here stage 3 holds
    save_model(model, recorded, stage=1, trained_stages=[1, 2, 3])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_model(recorded)[1].stage == 1
    stale = tmp_path / "stage2_after_3.pt"  # stage 2 fine-tuned from a stage-3 model: its segmenter no longer holds
    save_model(model, stale, stage=2, trained_stages=[1, 2])
    with pytest.warns(UserWarning, match="segmentation is untrained"):
        load_model(stale)


def test_file_url_download_is_verified_and_reports_progress(weights, tmp_path):
    _, source = weights
    url, sha = source.resolve().as_uri(), sha256_file(source)
    cache = tmp_path / "cache"
    seen: list[float] = []
    path = download_model(url, sha, cache_dir=cache, progress=lambda f, m: seen.append(f))
    assert path == cached_path(url, sha, cache) and path.read_bytes() == source.read_bytes()
    assert seen[0] == 0.0 and seen[-1] == 1.0 and seen == sorted(seen) and len(seen) >= 3
    assert [p.name for p in cache.iterdir()] == [path.name]  # no temporary file left
    messages: list[str] = []
    assert download_model(url, sha, cache_dir=cache, progress=lambda f, m: messages.append(m)) == path
    assert "already downloaded" in messages[-1]
    load_model(path)  # a downloaded file loads by path


def test_download_with_a_wrong_checksum_or_address_leaves_nothing(weights, tmp_path):
    _, source = weights
    cache = tmp_path / "cache"
    with pytest.raises(ModelError, match="does not match its SHA-256 checksum .* was deleted") as error:
        download_model(source.resolve().as_uri(), "0" * 64, cache_dir=cache)
    _one_sentence(error)
    assert list(cache.iterdir()) == []
    with pytest.raises(ModelError, match="Cannot download") as error:
        download_model((tmp_path / "absent.pt").as_uri(), "0" * 64, cache_dir=cache)
    _one_sentence(error)
    assert list(cache.iterdir()) == []


def test_urls_are_downloaded_only_when_asked(weights, registry, tmp_path):
    _, source = weights
    url, sha = source.resolve().as_uri(), sha256_file(source)
    cache = tmp_path / "cache"
    with pytest.raises(ModelError, match="#sha256="):
        resolve_model(url, models_dir=registry, cache_dir=cache)
    with pytest.raises(ModelError, match="not downloaded yet"):
        resolve_model(f"{url}#sha256={sha}", models_dir=registry, cache_dir=cache)
    assert not cache.exists()
    model, info = load_model(f"{url}#sha256={sha}", models_dir=registry, cache_dir=cache, download=True)
    assert info.source == "url" and info.path.parent == cache and not model.training
    # A registry entry whose file is not installed comes from its URL, again only when asked.
    (registry / "tiny-v1.pt").unlink()
    (registry / "models.json").write_text(json.dumps({"models": [_entry(source, url=url)]}))
    other = tmp_path / "other-cache"
    with pytest.raises(ModelError, match="not downloaded yet"):
        load_model("tiny-v1", models_dir=registry, cache_dir=other)
    _, info = load_model("tiny-v1", models_dir=registry, cache_dir=other, download=True)
    assert info.source == "registry" and info.path.parent == other
