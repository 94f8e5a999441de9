"""Managing models from the panel: shipped and user models, validated adds, removal."""

from __future__ import annotations

import json

import pytest
import torch
from NSLFSlicerLib import engine
from NSLFSlicerLib.model_manager import ModelError, add_model, installed_models, remove_model
from NSLFSlicerLib.testing import write_random_model

from nslfcore.model_store import list_models, sha256_file


def test_shipped_models_are_listed_with_their_metrics():
    shipped = [e for e in installed_models() if e.source == "shipped"]
    assert [e.info.id for e in shipped] == [m.id for m in list_models(engine.models_folder())]
    for entry in shipped:
        assert entry.available and entry.spec == entry.info.id and "(yours)" not in entry.label()
        assert "WT Dice" in entry.metrics()


def test_add_validates_copies_and_registers_a_model(tmp_path):
    user = tmp_path / "user-models"
    source = write_random_model(tmp_path / "my run best.pt", seed=3)
    entry = add_model(source, user, title="My NSLF")
    assert entry.source == "user" and entry.info.id == "my-run-best" and entry.label() == "My NSLF (yours)"
    copied = user / "my-run-best.pt"
    assert entry.spec == str(copied) and sha256_file(copied) == sha256_file(source)
    registry = json.loads((user / "models.json").read_text())
    assert registry["models"][0]["sha256"] == sha256_file(source) and registry["models"][0]["config"]["name"] == "compact"
    assert [e.info.id for e in installed_models(user) if e.source == "user"] == ["my-run-best"]
    with pytest.raises(ModelError, match="already installed"):
        add_model(source, user)
    second = add_model(write_random_model(tmp_path / "my run best.pt", seed=4), user)
    assert second.info.id == "my-run-best-2"


@pytest.mark.parametrize("kind", ["truncated", "pickle", "nan", "baseline"])
def test_broken_files_are_refused_and_nothing_is_copied(kind, tmp_path):
    user = tmp_path / "user-models"
    path = write_random_model(tmp_path / "m.pt")
    if kind == "baseline":  # loads, but segments only
        from nslfcore.baseline import BaselineUNet
        from nslfcore.model_store import save_model

        save_model(BaselineUNet(), path)
    elif kind == "truncated":
        path.write_bytes(path.read_bytes()[:5000])
    elif kind == "pickle":
        data = torch.load(path, weights_only=True)
        data["evil"] = ModelError("a Python object only full unpickling can load")
        torch.save(data, path)
    else:
        data = torch.load(path, weights_only=True)
        data["model"]["fsd.classifier.weight"].fill_(float("nan"))
        torch.save(data, path)
    with pytest.raises(ModelError):
        add_model(path, user)
    assert not user.exists() or not any(user.glob("*.pt"))


def test_remove_deletes_user_models_only(tmp_path):
    user = tmp_path / "user-models"
    entry = add_model(write_random_model(tmp_path / "mine.pt"), user)
    remove_model(entry.info.id, user)
    assert not (user / "mine.pt").exists() and [e for e in installed_models(user) if e.source == "user"] == []
    shipped = installed_models()[0].info.id
    with pytest.raises(ModelError, match="cannot be removed"):
        remove_model(shipped, user)
