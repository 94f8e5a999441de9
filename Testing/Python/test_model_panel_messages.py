"""What the Models part of the panel says: a broken ``models.json`` of the user's, and what the shipped model is (issue 33).

A user models folder whose ``models.json`` cannot be read no longer stops the panel opening: the
shipped models are listed with one sentence naming the file
(:func:`NSLFSlicerLib.model_manager.panel_models`). The shipped model is labelled "trained on
synthetic phantoms; not validated on real MRI" with a link to the README's advice until its registry
entry reports results on real MRI (:func:`NSLFSlicerLib.panel_state.model_info_text`).
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest
from NSLFSlicerLib import panel_state
from NSLFSlicerLib.model_manager import (
    ModelEntry,
    ModelError,
    installed_models,
    panel_models,
)
from NSLFSlicerLib.panel_state import (
    SYNTHETIC_CAUTION,
    VALIDATION_ADVICE_URL,
    model_info_text,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("content", ["{ not json", '{"models": 3}', '{"models": [{"id": "x"}]}'])
def test_a_broken_user_registry_leaves_the_shipped_models_and_names_the_file(tmp_path, content):
    registry = tmp_path / "models.json"
    registry.write_text(content)
    with pytest.raises(ModelError):
        installed_models(tmp_path)  # what setup() called: the panel did not open
    entries, problem = panel_models(tmp_path)
    assert [e.info.id for e in entries] == [e.info.id for e in installed_models()] and entries
    assert all(e.source == "shipped" for e in entries)
    assert problem.startswith(f"Your models are not listed: {registry}") and problem.count(str(registry)) == 1
    assert problem.endswith("Until then only the shipped models are offered.") and "\n" not in problem


def test_a_readable_user_registry_gives_no_message(tmp_path):
    assert panel_models(tmp_path) == (installed_models(), "")  # no models.json: nothing to say
    (tmp_path / "models.json").write_text('{"models": []}')
    assert panel_models(tmp_path) == (installed_models(), "")


def test_the_shipped_model_is_labelled_synthetic_with_a_link_to_the_validation_advice():
    shipped = installed_models()[0]
    assert shipped.source == "shipped" and "real_mri" not in shipped.info.evaluation
    text = model_info_text(shipped)
    assert "Trained on synthetic phantoms; not validated on real MRI." in text
    assert f'<a href="{VALIDATION_ADVICE_URL}">' in text and SYNTHETIC_CAUTION in text
    assert text.index(SYNTHETIC_CAUTION) < text.index(shipped.info.description[:40])  # the label first, then the description
    validated = replace(shipped, info=replace(shipped.info, evaluation={**shipped.info.evaluation, "real_mri": {"cases": 50}}))
    assert SYNTHETIC_CAUTION not in model_info_text(validated)  # once a model validated on real MRI ships, no label
    user = ModelEntry(shipped.info, "user", "/models/mine.pt")
    assert SYNTHETIC_CAUTION not in model_info_text(user)
    odd = replace(shipped, info=replace(shipped.info, description="a <b>bold</b> & odd description"))
    assert "a &lt;b&gt;bold&lt;/b&gt; &amp; odd description" in model_info_text(odd)  # rich text: descriptions are escaped


def test_the_link_leads_to_the_readmes_section_on_real_mri_of_the_project_page():
    base, anchor = VALIDATION_ADVICE_URL.split("#")
    assert base == panel_state.PROJECT_URL
    assert f'<a href="{base}">the project page</a>' in (ROOT / "NSLFSlicer" / "NSLFSlicer.py").read_text()
    readme = (ROOT / "README.md").read_text()
    sections = re.split(r"^## ", readme, flags=re.MULTILINE)
    slug = {re.sub(r"[^\w\- ]", "", s.splitlines()[0].strip().lower()).replace(" ", "-"): s for s in sections[1:]}
    assert anchor in slug, f"README.md has no section #{anchor}"
    assert "The shipped model does not work on real MRI yet." in slug[anchor]
    assert "validate a model on labelled scans of your own site" in slug[anchor]


def test_the_widget_shows_the_texts_and_lets_the_link_open():
    import xml.etree.ElementTree as ET

    source = (ROOT / "NSLFSlicer" / "NSLFSlicer.py").read_text()
    assert "self.ui.modelInfoLabel.text = model_info_text(entry)" in source
    assert "entries, problem = panel_models(self.userModelsFolder())" in source and "installed_models(" not in source
    label = next(w for w in ET.parse(ROOT / "NSLFSlicer" / "Resources" / "UI" / "NSLFSlicer.ui").getroot().iter("widget")
                 if w.get("name") == "modelInfoLabel")  # fmt: skip
    props = {p.get("name"): (p[0].text or "") for p in label.iter("property")}
    assert props["openExternalLinks"] == "true" and props["textFormat"] == "Qt::RichText"
