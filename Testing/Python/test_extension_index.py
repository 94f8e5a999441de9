"""The Extensions Index's checks, applied here to the description files before they are submitted.

Slicer/ExtensionsIndex validates a pull request with ``scripts/check_description_files.py`` (the
catalog entry against its JSON schema; extension name; category; git repository name; scm URL;
the top-level ``CMakeLists.txt``: ``project()`` name, icon and screenshot URLs that download as
images; a license file; a clone under 100 MB) and lints it with prettier 3.5.3 and
``prettier-plugin-multiline-arrays`` (``multilineArraysWrapThreshold: 0``: every non-empty array
one item per line). The same rules run here on the checkout, with the URLs' files looked up in
the checkout instead of downloaded. Not checkable here, stated in ``Resources/ExtensionsIndex/README.md``:
the GitHub topic ``3d-slicer-extension`` and the repository existing under the scm URL.

The extension's metadata lives in three places that must agree: ``CMakeLists.txt`` (what
Slicer's extension build packages), ``NSLFSlicer.s4ext`` (the description file) and the catalog
entry ``Resources/ExtensionsIndex/NSLFSlicer.json`` (the one copy; it is what gets submitted).
"""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import urllib.parse
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXTENSION = "NSLFSlicer"
CATALOG = ROOT / "Resources" / "ExtensionsIndex" / f"{EXTENSION}.json"
S4EXT = ROOT / f"{EXTENSION}.s4ext"
CMAKE = ROOT / "CMakeLists.txt"
SCREENSHOT = ROOT / "Resources" / "Screenshots" / f"{EXTENSION}.png"
#: Schema v1.0.1 (Slicer/Slicer Schemas/slicer-extension-catalog-entry-schema-v1.0.1.json): its properties and types.
SCHEMA_PROPERTIES = {"$schema": str, "category": str, "scm_url": str, "scm_revision": str, "scm_type": str,
                     "build_dependencies": list, "build_subdirectory": str, "enabled": bool, "tier": int}  # fmt: skip
SCHEMA_REQUIRED = {"$schema", "category", "scm_url"}
#: check_description_files.py's allowed repository-name prefixes (check_git_repository_name).
REPOSITORY_PREFIXES = ("Slicer", "Slicer-", "Slicer_", "SlicerExtension-", "SlicerExtension_")
#: Template and placeholder text that must not be left in the metadata (Slicer's templates say "Jane Roe (Superware)").
PLACEHOLDERS = re.compile(r"\b(jane|john|roe|doe|bloggs|firstname\d*|lastname\d*|superware|noware|nowhere|todo|fixme|xxx)\b",
                          re.IGNORECASE)  # fmt: skip
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def catalog() -> dict:
    return json.loads(CATALOG.read_text(encoding="utf-8"))


def s4ext() -> dict[str, str]:
    """``keyword value`` lines of the .s4ext (comments and blank lines skipped; a blank value is ``""``)."""
    fields = {}
    for line in S4EXT.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition(" ")
            fields[key] = value.strip()
    return fields


def cmake_extension_variables() -> dict[str, str]:
    """``set(EXTENSION_X "value")`` of the top-level CMakeLists.txt."""
    return dict(re.findall(r'set\s*\(\s*(EXTENSION_\w+)\s+"([^"]*)"\s*\)', CMAKE.read_text(encoding="utf-8")))


def repository(url: str) -> tuple[str, str]:
    """``(owner, name)`` of a GitHub URL, as check_git_repository_name reads the name (``.git`` dropped)."""
    parts = urllib.parse.urlsplit(url.strip().strip("/")).path.strip("/").split("/")
    return parts[0], os.path.splitext(parts[1])[0]


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()[:24]
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


def test_one_catalog_entry():
    """One copy of the entry in the repository: two differing copies were already submitted-candidates once."""
    copies = []
    for folder, subfolders, files in os.walk(ROOT):
        subfolders[:] = [d for d in subfolders if not d.startswith(".") and d not in {"build", "outputs", "runs", "node_modules"}]
        for name in files:
            path = Path(folder) / name
            if name.endswith(".json"):
                with open(path, encoding="utf-8", errors="ignore") as handle:
                    if "slicer-extension-catalog-entry-schema" in handle.read(300):
                        copies.append(path)
    assert copies == [CATALOG], copies


def test_catalog_entry_follows_the_schema():
    entry = catalog()
    assert SCHEMA_REQUIRED <= set(entry) and set(entry) <= set(SCHEMA_PROPERTIES), sorted(entry)
    for key, value in entry.items():
        assert type(value) is SCHEMA_PROPERTIES[key], f"{key}: {value!r} is not a {SCHEMA_PROPERTIES[key].__name__}"
    assert re.fullmatch(r"https://raw\.githubusercontent\.com/Slicer/Slicer/main/Schemas/slicer-extension-catalog-entry-schema-v1\.0\.[12]\.json#?",
                        entry["$schema"])  # fmt: skip
    assert entry.get("scm_type", "git") in {"git", "local"} and 1 <= entry.get("tier", 1) <= 5
    assert all(isinstance(d, str) and d for d in entry.get("build_dependencies", []))


def test_catalog_entry_is_formatted_as_prettier_formats_it():
    """prettier + multiline-arrays (threshold 0) prints a flat JSON object as ``json.dumps(indent=2)`` does.

    Checked against the Index itself: all 255 entries there (flat objects) equal their
    ``json.dumps(indent=2)`` + newline; the earlier entry with the inline ``["PyTorch"]`` failed
    ``prettier --check`` and this test.
    """
    raw = CATALOG.read_bytes()
    assert b"\r" not in raw and b"\t" not in raw, "CR line endings or tabs"  # check_json_file_format, forbid-tabs
    entry = json.loads(raw)
    assert not any(isinstance(v, dict) for v in entry.values()), "nested objects: prettier keeps them as written"
    assert raw.decode("utf-8") == json.dumps(entry, indent=2, ensure_ascii=False) + "\n"


def test_extension_name_and_repository_name():
    """The extension is NSLFSlicer (no "Slicer" prefix); its repository's name starts with "Slicer"."""
    assert not EXTENSION.lower().startswith("slicer")
    projects = re.findall(r"project\s*\(\s*([^\s\)\n\r]+)", CMAKE.read_text(encoding="utf-8"), re.IGNORECASE)
    assert projects and projects[0].strip("\"'") == EXTENSION  # check_cmakelists_content: project() == file name
    url = catalog()["scm_url"]
    assert "://" in url and urllib.parse.urlsplit(url).scheme in {"git", "https"}  # check_scm_url_syntax
    assert urllib.parse.urlsplit(url).netloc == "github.com"
    _, name = repository(url)
    assert name.startswith(REPOSITORY_PREFIXES) and name != EXTENSION, name


def test_category_is_the_modules_and_known_to_the_index():
    category = catalog()["category"]
    assert category == "Segmentation"  # in check_description_files.py's ACCEPTED_EXTENSION_CATEGORIES
    module = (ROOT / EXTENSION / f"{EXTENSION}.py").read_text(encoding="utf-8")
    assert re.search(r'parent\.categories = \[translate\("qSlicerAbstractCoreModule", "' + category + r'"\)\]', module)


def test_s4ext_cmake_and_catalog_agree():
    entry, desc, cmake = catalog(), s4ext(), cmake_extension_variables()
    assert desc["scm"] == entry.get("scm_type", "git") and desc["scmurl"] == entry["scm_url"]
    assert desc["scmrevision"] == entry["scm_revision"] and desc["build_subdirectory"] == entry["build_subdirectory"]
    assert desc["depends"].split() == entry["build_dependencies"] == cmake["EXTENSION_DEPENDS"].split()
    assert desc["category"] == entry["category"] == cmake["EXTENSION_CATEGORY"]
    for key in ("homepage", "contributors", "description", "iconurl", "screenshoturls"):
        in_cmake = cmake[f"EXTENSION_{key.upper()}"]
        assert desc[key] == in_cmake, f"{key}: .s4ext {desc[key]!r}, CMakeLists.txt {in_cmake!r}"
    assert repository(desc["homepage"]) == repository(entry["scm_url"])


def test_contributors_are_real_text():
    contributors = cmake_extension_variables()["EXTENSION_CONTRIBUTORS"]
    module = (ROOT / EXTENSION / f"{EXTENSION}.py").read_text(encoding="utf-8")
    in_module = re.search(r"parent\.contributors = \[(.*?)\]", module, re.DOTALL)
    assert in_module and ", ".join(re.findall(r'"([^"]+)"', in_module[1])) == contributors
    for path in (S4EXT, CMAKE, CATALOG):
        found = PLACEHOLDERS.findall(path.read_text(encoding="utf-8"))
        assert not found, f"{path.name} holds placeholder text {found}"


def test_icon_and_screenshot_urls_name_files_in_this_repository():
    """check_cmakelists_content downloads them; here: the Index's patterns match, and each URL's file is a PNG in the checkout."""
    text = CMAKE.read_text(encoding="utf-8")
    icons = re.findall(r'set\s*\(EXTENSION_ICONURL\s*"([^"]+)"[ ]*\)', text, re.IGNORECASE)
    screenshots = re.findall(r'set\s*\(EXTENSION_SCREENSHOTURLS\s*"([^"]+)"\)', text, re.IGNORECASE)
    assert len(icons) == 1 and len(screenshots) == 1, "the Index's patterns find no EXTENSION_ICONURL/SCREENSHOTURLS"
    entry = catalog()
    owner, name = repository(entry["scm_url"])
    prefix = f"https://raw.githubusercontent.com/{owner}/{name}/{entry['scm_revision']}/"
    files = []
    for url in [icons[0], *screenshots[0].split()]:
        assert url.startswith(prefix) and url.lower().endswith(".png"), url
        files.append(ROOT / urllib.parse.unquote(url[len(prefix):]))
    assert all(path.is_file() for path in files), [str(p) for p in files if not p.is_file()]
    assert png_size(files[0]) == (128, 128)  # the .s4ext template: "png, size 128x128 pixels"
    assert files[1:] == [SCREENSHOT]
    width, height = png_size(SCREENSHOT)
    assert width >= 1000 and 0.4 < height / width < 1.0, (width, height)
    assert SCREENSHOT.stat().st_size < 500_000


def test_project_links_name_the_repository():
    """Every link to the project's GitHub owner names the catalog's repository (no stale NSLFSlicer repository URL)."""
    owner, name = repository(catalog()["scm_url"])
    pattern = re.compile(rf"(?:github\.com|raw\.githubusercontent\.com)/{re.escape(owner)}/([A-Za-z0-9_.-]+)")
    paths = [S4EXT, CMAKE, CATALOG, ROOT / "README.md", ROOT / EXTENSION / f"{EXTENSION}.py",
             *sorted((ROOT / EXTENSION / "NSLFSlicerLib").glob("*.py"))]
    stale = {f"{p.relative_to(ROOT)}: {m}" for p in paths for m in pattern.findall(p.read_text(encoding="utf-8"))
             if os.path.splitext(m)[0] != name}  # fmt: skip
    assert not stale, sorted(stale)


def test_license_file_at_the_top():
    assert (ROOT / "LICENSE").is_file()  # check_license_file


def test_clone_stays_under_the_index_limit():
    """check_repository_size: the clone (working tree + .git) under 100 MB; approximated by the tracked files and the packs."""
    try:
        tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=60).stdout
        counts = subprocess.run(["git", "count-objects", "-v"], cwd=ROOT, capture_output=True, text=True, check=True,
                                timeout=60).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: the clone's size cannot be estimated")
    files = sum((ROOT / p).stat().st_size for p in tracked.decode().split("\0") if p and (ROOT / p).is_file())
    objects = dict(line.split(": ") for line in counts.splitlines())
    history = (int(objects["size-pack"]) + int(objects["size"])) * 1024
    assert files + history < 100 * 1024 * 1024, f"{files / 2**20:.0f} MB of files + {history / 2**20:.0f} MB of history"


def test_index_readme_states_what_cannot_be_checked_here():
    readme = (ROOT / "Resources" / "ExtensionsIndex" / "README.md").read_text(encoding="utf-8")
    owner, name = repository(catalog()["scm_url"])
    assert "3d-slicer-extension" in readme and f"{owner}/{name}" in readme
    assert "Minimum Slicer: 5.10" in readme  # the index branch decides the Slicer version; the entry cannot say it


def test_screenshot_script_draws_the_panel_of_the_ui_and_four_views(tmp_path):
    """``make_screenshot.py`` on a tiny finished run (its results reused): panel rows from the .ui, the PNG's shape and size."""
    import importlib.util
    import xml.etree.ElementTree as ET

    import matplotlib.pyplot as plt
    import numpy as np
    import SimpleITK as sitk

    spec = importlib.util.spec_from_file_location("make_screenshot", ROOT / "Resources" / "Screenshots" / "make_screenshot.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    ui = ET.parse(ROOT / EXTENSION / "Resources" / "UI" / f"{EXTENSION}.ui").getroot()
    sections = [w.find("property[@name='text']/string").text for w in ui.iter("widget")
                if w.get("class") == "ctkCollapsibleButton"]  # fmt: skip
    assert [row[1] for row in script.ui_rows({}) if row[0] == "section"] == sections
    results = tmp_path / "results"
    results.mkdir()
    fused = np.random.default_rng(0).uniform(0, 1, (24, 32, 32)).astype(np.float32)
    labels = np.zeros(fused.shape, np.uint8)
    labels[8:16, 10:20, 10:20], labels[10:14, 12:18, 12:18] = 2, 4
    sitk.WriteImage(sitk.GetImageFromArray(fused), str(results / "fused.nii.gz"))
    sitk.WriteImage(sitk.GetImageFromArray(labels), str(results / "labels.nii.gz"))
    plt.imsave(results / "render.png", np.random.default_rng(1).uniform(0, 1, (40, 40, 3)))
    header = '"Region","Description","Labels","Voxels","Volume [mL]","Agreement","Mean entropy","Confidence"\n'
    (results / "tumor_volumes.csv").write_text(header + '"WT","Whole tumor (NCR + ED + ET)","1,2,4",800,0.8,nan,0.1,"ok"\n')
    (tmp_path / "batch.log").write_text("  confidence: agreement 0.97 (2 mirrored passes)\n  done in 12.0 s; results in x\n")
    out = tmp_path / "shot.png"
    assert script.main(["--work", str(tmp_path), "--out", str(out)]) == 0
    assert png_size(out) == (script.WIDTH, script.HEIGHT) and out.stat().st_size < 500_000
    picture = plt.imread(out)
    split = int(script.PANEL_W * script.WIDTH)
    panel, views = picture[60:, : split - 5], picture[60:600, split + 5 :]
    assert panel.std() > 0.05 and views.std() > 0.05  # both halves drawn, not blank
