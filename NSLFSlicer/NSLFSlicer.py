"""NSLF Fusion and Segmentation: the Slicer scripted module (module, widget, logic, test).

Imported only inside the Slicer application. The Qt-free work lives in ``NSLFSlicerLib``
(importable with slicer-core alone); this file keeps the four classes of Slicer's scripted-module
template thin.
"""

from __future__ import annotations

import os
import tempfile

import slicer
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from NSLFSlicerLib.app_setup import application_context
from NSLFSlicerLib.logic import NSLFLogicCore


class NSLFSlicer(ScriptedLoadableModule):
    """Module description shown in Slicer."""

    def __init__(self, parent) -> None:
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "NSLF Fusion and Segmentation"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = []
        self.parent.contributors = ["NSLFSlicer developers"]
        self.parent.helpText = """
Fuses four co-registered brain MR volumes (T1, T1ce, T2, FLAIR) into one volume and segments the
brain tumour (necrotic core, edema, enhancing tumour) with the NSLF network, on GPU or CPU.
Select the four inputs (or press Auto-assign), a model and a device, then Fuse, Segment or
Fuse + Segment. Results: a fused volume with volume rendering, a segmentation with closed
surfaces and a table of tumour volumes (mL).
See <a href="https://github.com/nslfslicer/NSLFSlicer">the project page</a> and
<a href="https://github.com/ImZhangyYing/NLSF">the authors' code</a>.
"""
        self.parent.acknowledgementText = """
NSLF is the work of Zhang et al.: "A nested self-supervised learning framework for 3-D semantic
segmentation-driven multi-modal medical image fusion". Please cite their paper when you use
this module.
"""


class NSLFSlicerWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Thin widget: the .ui file owns the layout; buttons call the logic."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic: NSLFSlicerLogic | None = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        ui_widget = slicer.util.loadUI(self.resourcePath("UI/NSLFSlicer.ui"))
        self.layout.addWidget(ui_widget)
        self.ui = slicer.util.childWidgetVariables(ui_widget)
        ui_widget.setMRMLScene(slicer.mrmlScene)
        self.logic = NSLFSlicerLogic()
        self.ui.autoAssignButton.connect("clicked(bool)", self.onAutoAssign)
        self.ui.fuseButton.connect("clicked(bool)", lambda: self.onRun(fuse=True, segment=False))
        self.ui.segmentButton.connect("clicked(bool)", lambda: self.onRun(fuse=False, segment=True))
        self.ui.fuseSegmentButton.connect("clicked(bool)", lambda: self.onRun(fuse=True, segment=True))
        self.ui.cancelButton.connect("clicked(bool)", lambda: self.logic.requestCancel())
        self.onAutoAssign()

    def selectors(self) -> dict:
        return {"t1": self.ui.t1Selector, "t1ce": self.ui.t1ceSelector, "t2": self.ui.t2Selector, "flair": self.ui.flairSelector}

    def onAutoAssign(self) -> None:
        with slicer.util.tryWithErrorDisplay("Could not assign the inputs.", waitCursor=True):
            for modality, node in self.logic.assignInputs().items():
                self.selectors()[modality].setCurrentNode(node)

    def onRun(self, fuse: bool, segment: bool) -> None:
        from NSLFSlicerLib.dependencies import ensure_dependencies

        if not ensure_dependencies(ask=True):  # torch via the PyTorch extension, monai/nibabel via pip
            return

        def progress(fraction: float, message: str) -> None:
            self.ui.progressBar.value = int(100 * fraction)
            self.ui.statusLabel.text = message
            slicer.app.processEvents()

        with slicer.util.tryWithErrorDisplay("NSLF failed.", waitCursor=True):
            inputs = {m: s.currentNode() for m, s in self.selectors().items()}
            model = self.ui.modelLineEdit.text.strip() or None
            outputs = self.logic.process(
                **inputs, outputVolume=self.ui.outputVolumeSelector.currentNode(),
                outputSegmentation=self.ui.outputSegmentationSelector.currentNode(),
                model=model, device=self.ui.deviceComboBox.currentText, progressCallback=progress,
                resampleToReference=self.ui.resampleCheckBox.checked, fuse=fuse, segment=segment,
            )  # fmt: skip
            if outputs.fused is not None:
                self.ui.outputVolumeSelector.setCurrentNode(outputs.fused)
                slicer.util.setSliceViewerLayers(background=outputs.fused, fit=True)
            if outputs.segmentation is not None:
                self.ui.outputSegmentationSelector.setCurrentNode(outputs.segmentation)


class NSLFSlicerLogic(ScriptedLoadableModuleLogic, NSLFLogicCore):
    """The Slicer-facing logic: :class:`NSLFSlicerLib.logic.NSLFLogicCore` on the application's scene.

    Example (Python console)::

        logic = slicer.util.getModuleLogic("NSLFSlicer")
        outputs = logic.process(**logic.assignInputs(), device="auto")
    """

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        NSLFLogicCore.__init__(self, application_context())


class NSLFSlicerTest(ScriptedLoadableModuleTest):
    """Runs the CI scenario (``NSLFSlicerLib.testing.run_scenario``) inside Slicer."""

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        self.setUp()
        self.test_NSLFSlicer_scenario()

    def test_NSLFSlicer_scenario(self) -> None:
        from NSLFSlicerLib.testing import run_scenario

        self.delayDisplay("Running the NSLF scenario on a tiny oblique phantom")
        with tempfile.TemporaryDirectory(prefix="nslf-test-") as tmp:
            run_scenario(NSLFSlicerLogic(), os.path.join(tmp, "scenario"))
        self.delayDisplay("Test passed")
