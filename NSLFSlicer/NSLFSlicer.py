"""NSLF Fusion and Segmentation: the Slicer scripted module (module, widget, logic, test).

Imported only inside the Slicer application. The Qt-free work lives in ``NSLFSlicerLib``
(importable with slicer-core alone); this file keeps the four classes of Slicer's scripted-module
template thin.
"""

from __future__ import annotations

import logging
import os
import pathlib
import tempfile
import time
from typing import Annotated, Any

import qt
import slicer
import vtk
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.util import VTKObservationMixin

from NSLFSlicerLib import sample_case
from NSLFSlicerLib.app_setup import default_context
from NSLFSlicerLib.background import BackgroundRun
from NSLFSlicerLib.checks import InputError, preprocessing_reason
from NSLFSlicerLib.compatibility import running_slicer_problem
from NSLFSlicerLib.dependencies import ensure_dependencies
from NSLFSlicerLib.engine import device_query_command
from NSLFSlicerLib.logic import NSLFLogicCore
from NSLFSlicerLib.model_manager import add_model, download, panel_models, remove_model
from NSLFSlicerLib.panel_state import (
    BackgroundCall,
    ChoiceList,
    DatasetChecker,
    DeviceList,
    PreprocessProposal,
    Show3DPreference,
    can_start_training,
    confidence_text,
    finished_status,
    model_info_text,
    path_text,
    restore_index,
    run_blocker,
    shared_gpu,
)
from NSLFSlicerLib.process_runner import ProcessRunner, format_eta
from NSLFSlicerLib.terminology import register_terminology
from NSLFSlicerLib.training_events import EventSchemaError
from NSLFSlicerLib.training_job import TrainingJob, TrainingSettings, check_dataset, parse_crop
from NSLFSlicerLib.training_plot import TrainingPlots


class NSLFSlicer(ScriptedLoadableModule):
    """Module description shown in Slicer."""

    def __init__(self, parent) -> None:
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("NSLF Fusion and Segmentation")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = []
        self.parent.contributors = ["NSLFSlicer developers"]
        self.parent.helpText = _("""
Fuses four co-registered brain MR volumes (T1, T1ce, T2, FLAIR) into one volume and segments the
brain tumour (necrotic core, edema, enhancing tumour) with the NSLF network, on GPU or CPU.
Select the four inputs (or press Auto-assign; any three work, and the status line says what the
missing one costs), a model and a device, then Fuse, Segment or Fuse + Segment. Results: a fused
volume with volume rendering, a segmentation with closed surfaces and a table of tumour volumes (mL).
For raw exams (sequences on different grids, skull on, thick or oblique slices) tick "Raw scans:
register and skull-strip" (proposed when the inputs need it): the sequences are co-registered to
T1ce, skull-stripped and aligned to the atlas first; the results come on the T1ce grid with the
brain mask and the registrations as transforms.
See <a href="https://github.com/nslfslicer/SlicerNSLF">the project page</a> and
<a href="https://github.com/ImZhangyYing/NLSF">the authors' code</a>.
""")
        self.parent.acknowledgementText = _("""
NSLF is the work of Zhang et al.: "A nested self-supervised learning framework for 3-D semantic
segmentation-driven multi-modal medical image fusion". Please cite their paper when you use
this module.
""")
        slicer.app.connect("startupCompleted()", registerSampleData)  # the BraTS case in the Sample Data module
        problem = running_slicer_problem()  # Slicer older than 5.10: say so instead of failing later
        if problem:
            logging.error(problem)
            self.parent.helpText = f"<b>{problem}</b><br>" + self.parent.helpText


def registerSampleData() -> None:
    """Add NSLF's public BraTS case to Slicer's Sample Data module (:mod:`NSLFSlicerLib.sample_data`)."""
    import SampleData

    from NSLFSlicerLib.sample_data import register_sample_data

    register_sample_data(SampleData.SampleDataLogic)


@parameterNodeWrapper
class NSLFSlicerParameterNode:
    """The module's scene-level state (bound to the .ui widgets through their ``SlicerParameterName``).

    Machine-level choices (device, model, your models folder) live in ``QSettings`` instead.
    """

    t1: vtkMRMLScalarVolumeNode
    t1ce: vtkMRMLScalarVolumeNode
    t2: vtkMRMLScalarVolumeNode
    flair: vtkMRMLScalarVolumeNode
    resampleToReference: bool = False
    preprocess: bool = False  # raw scans: register and skull-strip first (proposed by preprocessing_reason)
    mirror: Annotated[str, Choice(["none", "lr", "all"])] = "none"  # test-time mirroring; nslfcore.inference.DEFAULT_MIRROR
    outputVolume: vtkMRMLScalarVolumeNode
    outputSegmentation: vtkMRMLSegmentationNode
    trainingData: pathlib.Path
    trainingRunFolder: pathlib.Path
    trainingConfig: Annotated[str, Choice(["fast", "compact", "paper"])] = "fast"
    trainingStage: Annotated[str, Choice(["all", "1", "2", "3"])] = "all"
    trainingEpochs: Annotated[int, WithinRange(1, 1000)] = 30
    trainingLearningRate: Annotated[float, WithinRange(1e-6, 0.1)] = 1e-4
    trainingFusionCrop: str = "64 80 80"
    trainingSegmentationCrop: str = "64 160 160"
    trainingFineTune: bool = False


class NSLFSlicerWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Thin widget: the .ui file owns the layout, the parameter node holds the state, NSLFSlicerLib does the work.

    Fuse/Segment run in a child process (:class:`NSLFSlicerLib.background.BackgroundRun`) polled by a
    timer, so Slicer never freezes; training runs ``nslf train`` the same way
    (:class:`NSLFSlicerLib.training_job.TrainingJob`) with live curves (:class:`NSLFSlicerLib.training_plot.TrainingPlots`).
    """

    SETTINGS = "NSLFSlicer/"

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.ui: Any = None  # the .ui file's named widgets (slicer.util.childWidgetVariables), from setup()
        self.logic: NSLFSlicerLogic | None = None
        self._parameterNode: NSLFSlicerParameterNode | None = None
        self._parameterNodeGuiTag: Any = None
        self.runButtons: dict[Any, tuple[bool, bool]] = {}  # run button -> (fuse, segment), from setup()
        self.runButtonTexts: dict[Any, str] = {}  # run button -> its label while no run goes on
        self.job: BackgroundRun | ProcessRunner | None = None  # a run, or the sample-case generator
        self.sampleFolder: str = ""  # where the sample-case generator writes
        self.activeButton: Any = None  # the run button that reads Cancel while its run goes on
        self.runBlocker: str = ""  # why the inputs cannot run ("" when they can): the run buttons' tooltip
        self.modelCall: tuple[BackgroundCall, str] | None = None  # a model download or validation, and its failure title
        self.training: TrainingJob | None = None
        self.finishedTraining: TrainingJob | None = None  # the last training that ended, for "Add trained model"
        self.plots: TrainingPlots | None = None
        self.models: ChoiceList = ChoiceList(key=lambda entry: entry.spec)  # replaced before the model combo box refills
        self.show3D: Show3DPreference = Show3DPreference()
        self.preprocessProposal: PreprocessProposal = PreprocessProposal()  # ticks "Raw scans" for inputs that need it
        self.datasetChecker: DatasetChecker = DatasetChecker(check_dataset)  # a background thread, after typing stops
        self.devices: DeviceList = DeviceList(lambda: ProcessRunner(device_query_command()).start())  # torch stays out of Slicer
        self.timer: qt.QTimer = qt.QTimer()
        self.timer.setInterval(100)
        self.timer.connect("timeout()", self.onPoll)
        self.clock: qt.QElapsedTimer = qt.QElapsedTimer()

    # ------------------------------------------------------------------------------- set-up
    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        ui_widget = slicer.util.loadUI(self.resourcePath("UI/NSLFSlicer.ui"))
        self.layout.addWidget(ui_widget)
        self.ui = slicer.util.childWidgetVariables(ui_widget)
        ui_widget.setMRMLScene(slicer.mrmlScene)
        self.logic = NSLFSlicerLogic()
        u = self.ui
        u.autoAssignButton.connect("clicked(bool)", self.onAutoAssign)
        u.loadSampleButton.connect("clicked(bool)", self.onLoadSample)
        self.runButtons = {u.fuseButton: (True, False), u.segmentButton: (False, True), u.fuseSegmentButton: (True, True)}
        self.runButtonTexts = {button: button.text for button in self.runButtons}
        for button in self.runButtons:  # a run button turns into Cancel while its run is going
            button.connect("clicked(bool)", lambda checked=False, b=button: self.onRunButton(b))
        u.show3DButton.connect("clicked(bool)", self.onShow3DClicked)  # clicks only: not the programmatic changes
        u.addModelButton.connect("clicked(bool)", self.onAddModel)
        u.removeModelButton.connect("clicked(bool)", self.onRemoveModel)
        u.downloadModelButton.connect("clicked(bool)", self.onDownloadModel)
        u.openModelsFolderButton.connect("clicked(bool)", self.onOpenModelsFolder)
        u.userModelsPathLineEdit.connect("currentPathChanged(QString)", self.onUserModelsFolderChanged)
        u.trainingDataPathLineEdit.connect("currentPathChanged(QString)", self.onTrainingDataChanged)
        u.runFolderPathLineEdit.connect("currentPathChanged(QString)", lambda path: self.updateTrainingButtons())
        u.startTrainingButton.connect("clicked(bool)", lambda: self.onStartTraining(resume=False))
        u.resumeTrainingButton.connect("clicked(bool)", lambda: self.onStartTraining(resume=True))
        u.stopTrainingButton.connect("clicked(bool)", self.onStopTraining)
        u.showCurvesButton.connect("clicked(bool)", self.onShowCurves)
        u.addTrainedModelButton.connect("clicked(bool)", self.onAddTrainedModel)
        self.fillDevices()  # filled and set BEFORE the saving signal is connected
        self.refreshDevices()  # GPUs are listed once a child process has asked torch
        u.deviceComboBox.connect("currentIndexChanged(int)", lambda i: self.saveSetting("device", u.deviceComboBox.itemData(i)))
        u.userModelsPathLineEdit.currentPath = self.userModelsFolder()
        self.refreshModels()
        u.modelComboBox.connect("currentIndexChanged(int)", self.onModelChanged)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.initializeParameterNode()

    def cleanup(self) -> None:
        self.timer.stop()
        self.datasetChecker.shutdown()
        if self.job is not None:
            self.job.cancel()
        if self.training is not None:
            self.training.stop()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(NSLFSlicerParameterNode(self.logic.getParameterNode()))
        if not (self._parameterNode.t1 and self._parameterNode.flair):
            self.onAutoAssign(quiet=True)

    def setParameterNode(self, node: NSLFSlicerParameterNode | None) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterChanged)
        self._parameterNode = node
        if node:
            self._parameterNodeGuiTag = node.connectGui(self.ui)
            self.addObserver(node, vtk.vtkCommand.ModifiedEvent, self.onParameterChanged)
            self.updateTrainingButtons()
            self.onParameterChanged()

    def onParameterChanged(self, caller=None, event=None) -> None:
        """New inputs: the run buttons follow them; tick "Raw scans" and say why when they need it
        (:class:`NSLFSlicerLib.panel_state.PreprocessProposal`)."""
        p = self._parameterNode
        nodes = {m: getattr(p, m) for m in ("t1", "t1ce", "t2", "flair")}
        self.runBlocker = run_blocker(nodes, p.outputVolume)
        self.updateRunButtons()
        key = tuple(n.GetID() if n else None for n in nodes.values())
        change = self.preprocessProposal.inputs_changed(key, lambda: preprocessing_reason(nodes), p.preprocess)
        if change is not None:
            p.preprocess, self.ui.preprocessReasonLabel.text = change

    # ------------------------------------------------------------------------------- settings
    def setting(self, key: str, default: str) -> str:
        return str(qt.QSettings().value(self.SETTINGS + key, default))

    def saveSetting(self, key: str, value) -> None:
        qt.QSettings().setValue(self.SETTINGS + key, value)

    def userModelsFolder(self) -> str:
        default = os.path.join(os.path.dirname(slicer.app.slicerUserSettingsFilePath), "NSLFSlicer", "models")
        return self.setting("userModelsFolder", default)

    def fillDevices(self) -> None:
        """(Re)fill both device selectors from :attr:`devices`, keeping the saved or current choice (signals blocked)."""
        specs = [spec for _, spec in self.devices.choices]
        for combo, wanted in ((self.ui.deviceComboBox, self.setting("device", "auto")),
                              (self.ui.trainingDeviceComboBox, self.ui.trainingDeviceComboBox.currentData)):  # fmt: skip
            combo.blockSignals(True)
            combo.clear()
            for label, spec in self.devices.choices:
                combo.addItem(label, spec)
            combo.currentIndex = restore_index(specs, wanted, "auto")
            combo.blockSignals(False)

    def refreshDevices(self) -> None:
        """Ask a child process for torch's devices (at panel open, and after the dependency step installed torch)."""
        if self.devices.refresh():
            self.timer.start()

    # ------------------------------------------------------------------------------- inputs
    def onAutoAssign(self, quiet: bool = False) -> None:
        try:
            for modality, node in self.logic.assignInputs().items():
                setattr(self._parameterNode, modality, node)
        except InputError as error:
            if not quiet:
                slicer.util.errorDisplay(str(error))

    def onLoadSample(self) -> None:
        folder = os.path.join(slicer.app.temporaryPath, "NSLFSlicer-sample")
        if sample_case.is_generated(folder):
            return self.loadSample(folder)
        if not ensure_dependencies(ask=True):  # the generator runs torch; nothing else is installed for it
            return
        self.refreshDevices()  # torch may just have been installed
        missing = sample_case.missing_packages()  # scipy: bundled with Slicer, checked all the same
        if missing:
            slicer.util.errorDisplay(_("The sample case generator needs {packages}, which this Slicer lacks.").format(packages=", ".join(missing)))
            return
        args, env = sample_case.generate_command(folder)
        self.startJob(ProcessRunner(args, env=env).start(), _("Generating the sample case (about 15 s)"))
        self.sampleFolder = folder

    def loadSample(self, folder: str) -> None:
        with slicer.util.tryWithErrorDisplay(_("Could not load the sample case."), waitCursor=True):
            for modality, node in sample_case.load_sample_case(self.logic.context, folder).items():
                setattr(self._parameterNode, modality, node)
            slicer.util.setSliceViewerLayers(background=self._parameterNode.t1ce, fit=True)

    # ------------------------------------------------------------------------------- running
    def onRunButton(self, button) -> None:
        if self.job is not None:
            self.onCancel()
        else:
            self.activeButton = button
            self.onRun(*self.runButtons[button])

    def onRun(self, fuse: bool, segment: bool) -> None:
        p = self._parameterNode
        if not ensure_dependencies(ask=True, preprocess=p.preprocess):  # torch, monai/nibabel (and deepbet for raw scans)
            return
        self.refreshDevices()  # torch may just have been installed
        if self.training is not None:  # one GPU for both: one of them would run out of memory
            conflict = shared_gpu(self.ui.deviceComboBox.currentData, self.training.settings.device, self.devices.choices)
            if conflict:
                slicer.util.errorDisplay(conflict)
                return
        with slicer.util.tryWithErrorDisplay(_("NSLF cannot start."), waitCursor=True):
            job = BackgroundRun(
                self.logic, p.t1, p.t1ce, p.t2, p.flair, outputVolume=p.outputVolume,
                outputSegmentation=p.outputSegmentation, model=self.ui.modelComboBox.currentData,
                device=self.ui.deviceComboBox.currentData, resampleToReference=p.resampleToReference,
                fuse=fuse, segment=segment, workdir=slicer.app.temporaryPath, mirror=p.mirror, preprocess=p.preprocess,
            ).start()  # fmt: skip
            self.ui.confidenceLabel.text = ""
            self.startJob(job, _("Fusing and segmenting") if fuse and segment else _("Fusing") if fuse else _("Segmenting"))

    def startJob(self, job, message: str) -> None:
        self.job = job
        self.ui.logTextEdit.appendPlainText(f"--- {message}")
        self.setRunning(True, message)
        self.clock.start()
        self.timer.start()

    def setRunning(self, running: bool, message: str) -> None:
        """While running, the pressed run button reads Cancel (the others and Load sample are disabled)."""
        active = self.activeButton if isinstance(self.job, BackgroundRun) else None
        for button, text in self.runButtonTexts.items():
            button.text = _("Cancel") if running and button is active else text
        self.updateRunButtons()
        self.ui.loadSampleButton.enabled = not running
        self.ui.statusLabel.text = message
        if running:
            self.ui.progressBar.value = 0

    def updateRunButtons(self) -> None:
        """During a run only its Cancel is enabled; otherwise the run buttons need inputs that can run
        (:func:`NSLFSlicerLib.panel_state.run_blocker`, whose sentence is their tooltip)."""
        active = self.activeButton if isinstance(self.job, BackgroundRun) else None
        for button in self.runButtonTexts:
            button.enabled = button is active if self.job is not None else not self.runBlocker
            button.toolTip = "" if self.job is not None else self.runBlocker

    def onPoll(self) -> None:
        if self.job is not None:
            self.pollJob()
        if self.training is not None:
            self.pollTraining()
        checked = self.datasetChecker.poll(time.monotonic())
        if checked is not None:
            self.ui.datasetStatusLabel.text = checked[1]
        if self.devices.poll() is not None:
            self.fillDevices()
        if self.modelCall is not None:
            self.pollModelCall()
        busy = self.datasetChecker.busy or self.devices.busy or self.modelCall is not None
        if self.job is None and self.training is None and not busy:
            self.timer.stop()

    def pollJob(self) -> None:
        runner = self.job.runner if isinstance(self.job, BackgroundRun) else self.job
        for event in self.job.poll():
            if event.kind == "log" or event.kind == "error":
                self.ui.logTextEdit.appendPlainText(event.text)
            elif event.kind == "progress":
                self.ui.progressBar.value = int(100 * event.progress)
                self.ui.progressBar.format = format_eta(event.progress, self.clock.elapsed() / 1000)
                self.ui.statusLabel.text = event.text
        if not self.job.finished:
            return
        job, self.job = self.job, None
        self.setRunning(False, _("Ready."))
        if not (runner.delivered if isinstance(job, BackgroundRun) else runner.succeeded):  # a result sent is a result
            if isinstance(job, BackgroundRun):
                job.cleanup()  # a failed or cancelled run's files
            if not runner.cancelled:
                slicer.util.errorDisplay(_("NSLF failed."), detailedText=runner.failure_message())
            self.ui.statusLabel.text = _("Cancelled.") if runner.cancelled else _("Failed; see the log.")
            return
        if not isinstance(job, BackgroundRun):  # the sample case was generated
            return self.loadSample(self.sampleFolder)
        with slicer.util.tryWithErrorDisplay(_("NSLF results could not be imported."), waitCursor=True):
            outputs = job.finish()
            seconds = self.clock.elapsed() / 1000
            done = _("Done in {seconds} s.").format(seconds=f"{seconds:.0f}")
            self.ui.statusLabel.text = finished_status(done, outputs.message)  # a missing sequence: which, and its cost
            if outputs.message:
                self.ui.logTextEdit.appendPlainText(outputs.message)
            confidence, low = confidence_text(outputs.confidence)  # a line, and a plain warning when low
            self.ui.confidenceLabel.text = confidence
            self.ui.confidenceLabel.styleSheet = "color: #c0392b; font-weight: bold" if low else ""
            if confidence:
                self.ui.logTextEdit.appendPlainText(confidence)
            if outputs.fused is not None:
                self._parameterNode.outputVolume = outputs.fused
                slicer.util.setSliceViewerLayers(background=outputs.fused, fit=True)
            if outputs.segmentation is not None:
                self._parameterNode.outputSegmentation = outputs.segmentation
                show = self.show3D.after_segmentation()  # on, unless the user turned it off
                self.ui.show3DButton.blockSignals(True)
                self.ui.show3DButton.checked = show
                self.ui.show3DButton.blockSignals(False)
                self.onShow3D(show)

    def onCancel(self) -> None:
        """Ends the run's process tree without waiting for it (the timer's polls finish the job)."""
        if self.job is not None:
            self.job.cancel(wait=False)
            self.ui.statusLabel.text = _("Cancelling...")

    def onShow3DClicked(self, checked: bool) -> None:
        self.show3D.user_toggled(checked)
        self.onShow3D(checked)

    def onShow3D(self, show: bool) -> None:
        segmentation = self._parameterNode.outputSegmentation
        if segmentation is None:
            return
        segmentation.CreateClosedSurfaceRepresentation()
        segmentation.GetDisplayNode().SetVisibility3D(show)
        if show:
            manager = slicer.app.layoutManager()
            if manager.threeDViewCount == 0:  # the user's layout is kept when it has a 3-D view
                manager.setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpView)
            manager.threeDWidget(0).threeDView().resetFocalPoint()

    # ------------------------------------------------------------------------------- models
    def refreshModels(self, select: str | None = None) -> None:
        entries, problem = panel_models(self.userModelsFolder())  # a broken models.json of yours: the shipped ones and why
        if problem:
            logging.warning(problem)
            self.ui.logTextEdit.appendPlainText(problem)
            self.ui.statusLabel.text = problem
        combo, table = self.ui.modelComboBox, self.ui.modelsTableWidget
        index = self.models.replace(entries, select or self.setting("model", ""))  # the list first, then the combo box
        combo.blockSignals(True)
        combo.clear()
        for entry in entries:
            combo.addItem(entry.label(), entry.spec)
        combo.currentIndex = index
        combo.blockSignals(False)
        self.onModelChanged(index)
        table.clear()
        table.setColumnCount(3)
        table.setHorizontalHeaderLabels(["Model", "Source", "Evaluation"])
        table.setRowCount(len(entries))
        for row, entry in enumerate(entries):
            for column, text in enumerate((entry.label(), entry.source, entry.metrics())):
                table.setItem(row, column, qt.QTableWidgetItem(text))
        table.resizeColumnsToContents()

    def onModelChanged(self, index: int) -> None:
        entry = self.models.at(index)
        if entry is not None:
            self.saveSetting("model", entry.spec)
            self.ui.modelInfoLabel.text = model_info_text(entry)  # a shipped model not validated on real MRI says so

    def selectedEntry(self):
        return self.models.at(self.ui.modelsTableWidget.currentRow())

    def onAddModel(self, path: str | None = None) -> None:
        if self.modelCall is not None:  # one download or validation at a time
            return
        path = path or qt.QFileDialog.getOpenFileName(self.parent, "Add an NSLF model", "", "NSLF models (*.pt)")
        if not path or not ensure_dependencies(ask=True):  # validating loads the model with torch
            return
        self.startModelCall(_("Validating {file}...").format(file=os.path.basename(path)), _("The model was not added."),
                            BackgroundCall(add_model, path, self.userModelsFolder()))  # fmt: skip

    def onRemoveModel(self) -> None:
        entry = self.selectedEntry()
        if entry and slicer.util.confirmYesNoDisplay(_("Remove {model}? Its file is deleted.").format(model=entry.label())):
            with slicer.util.tryWithErrorDisplay(_("The model was not removed.")):
                remove_model(entry.info.id, self.userModelsFolder())
                self.refreshModels()

    def onDownloadModel(self) -> None:
        entry = self.selectedEntry()
        if entry is None or entry.available or self.modelCall is not None:
            return
        self.startModelCall(_("Downloading {model}...").format(model=entry.label()), _("The download failed."),
                            BackgroundCall(download, entry, progress=True))  # fmt: skip

    def startModelCall(self, message: str, failure: str, call: BackgroundCall) -> None:
        """A download or a validation runs in a thread; :meth:`pollModelCall` selects its model when it is done."""
        self.modelCall = (call, failure)
        self.ui.addModelButton.enabled = self.ui.downloadModelButton.enabled = False
        self.ui.statusLabel.text = message
        self.timer.start()

    def pollModelCall(self) -> None:
        call, failure = self.modelCall
        if call.message:
            self.ui.statusLabel.text = call.message
        if not call.done:
            return
        self.modelCall = None
        self.ui.addModelButton.enabled = self.ui.downloadModelButton.enabled = True
        self.ui.statusLabel.text = _("Ready.")
        with slicer.util.tryWithErrorDisplay(failure):
            self.refreshModels(select=call.result().spec)  # the added or downloaded model's entry

    def onOpenModelsFolder(self) -> None:
        os.makedirs(self.userModelsFolder(), exist_ok=True)
        qt.QDesktopServices.openUrl(qt.QUrl.fromLocalFile(self.userModelsFolder()))

    def onUserModelsFolderChanged(self, path: str) -> None:
        if path:
            self.saveSetting("userModelsFolder", path)
            self.refreshModels()

    # ------------------------------------------------------------------------------- training
    def onTrainingDataChanged(self, path: str) -> None:
        """A keystroke only schedules the check: it runs in a thread once the path stops changing."""
        self.ui.datasetStatusLabel.text = _("Checking...") if path_text(path) else ""
        self.datasetChecker.path_changed(path, time.monotonic())
        self.updateTrainingButtons()
        self.timer.start()

    def updateTrainingButtons(self) -> None:
        """Start and Resume need a dataset and a run folder (read from the fields: the parameter node may lag a signal)."""
        u = self.ui
        ready = can_start_training(u.trainingDataPathLineEdit.currentPath, u.runFolderPathLineEdit.currentPath,
                                   running=self.training is not None)  # fmt: skip
        u.startTrainingButton.enabled = u.resumeTrainingButton.enabled = ready

    def trainingSettings(self) -> TrainingSettings:
        p = self._parameterNode
        return TrainingSettings(
            data=path_text(p.trainingData), run_dir=path_text(p.trainingRunFolder), config=p.trainingConfig, stage=p.trainingStage,
            epochs=p.trainingEpochs, lr=p.trainingLearningRate, fusion_crop=parse_crop(p.trainingFusionCrop),
            segmentation_crop=parse_crop(p.trainingSegmentationCrop), device=self.ui.trainingDeviceComboBox.currentData,
            init=self.selectedModelFile() if p.trainingFineTune else None,
        )  # fmt: skip

    def selectedModelFile(self) -> str:
        """The file of the model chosen under Model (downloaded first if needed), to fine-tune from."""
        entry = self.models.at(self.ui.modelComboBox.currentIndex)
        if entry is None:
            raise ValueError("Choose a model under Model to fine-tune from.")
        if not entry.available:
            entry = download(entry)
        return str(entry.info.path)

    def onStartTraining(self, resume: bool) -> None:
        if not ensure_dependencies(ask=True):
            return
        self.refreshDevices()  # torch may just have been installed
        if isinstance(self.job, BackgroundRun):  # one GPU for both: one of them would run out of memory
            conflict = shared_gpu(self.job.device, self.ui.trainingDeviceComboBox.currentData, self.devices.choices)
            if conflict:
                slicer.util.errorDisplay(conflict)
                return
        with slicer.util.tryWithErrorDisplay(_("Training cannot start."), waitCursor=True):
            settings = self.trainingSettings()
            self.training = TrainingJob(settings).start(resume=resume)
            if self.plots is None:
                self.plots = TrainingPlots(slicer.mrmlScene)
            self.plots.start_run(settings.run_dir, resume)  # a new run: new curves; resuming the same run: the same ones
            self.ui.startTrainingButton.enabled = self.ui.resumeTrainingButton.enabled = False
            self.ui.stopTrainingButton.enabled = True
            self.ui.addTrainedModelButton.enabled = False
            self.timer.start()

    def pollTraining(self) -> None:
        try:
            events = self.training.poll()
        except EventSchemaError as error:
            self.training.cancel()
            events = []
            slicer.util.errorDisplay(str(error))
        charts_before = set(self.plots.charts)
        self.plots.update(events)
        progress = self.training.progress
        self.ui.trainingProgressBar.value = int(100 * progress.fraction)
        self.ui.trainingStatusLabel.text = progress.summary()
        if progress.stage in self.plots.charts and progress.stage not in charts_before:
            self.onShowCurves()
        if self.training.finished:
            failure = self.training.failure_message()
            if failure:
                slicer.util.errorDisplay(_("Training failed."), detailedText=failure)
            self.ui.stopTrainingButton.enabled = False
            self.ui.addTrainedModelButton.enabled = progress.best_checkpoint is not None
            self.finishedTraining, self.training = self.training, None
            self.updateTrainingButtons()

    def onStopTraining(self) -> None:
        if self.training is not None:
            self.training.stop()
            self.ui.trainingStatusLabel.text = _("Stopping after the current step (a checkpoint is written)...")

    def onShowCurves(self) -> None:
        if self.plots is None or not self.plots.charts:
            return
        stage = self.training.progress.stage if self.training and self.training.progress.stage in self.plots.charts else max(self.plots.charts)
        slicer.modules.plots.logic().ShowChartInLayout(self.plots.charts[stage])

    def onAddTrainedModel(self) -> None:
        job = self.finishedTraining
        if job is not None and job.progress.best_checkpoint:
            self.onAddModel(job.progress.best_checkpoint)


class NSLFSlicerLogic(ScriptedLoadableModuleLogic, NSLFLogicCore):
    """The Slicer-facing logic: :class:`NSLFSlicerLib.logic.NSLFLogicCore` on the application's scene.

    Example (Python console)::

        logic = slicer.util.getModuleLogic("NSLFSlicer")
        outputs = logic.process(**logic.assignInputs(), device="auto")
    """

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        NSLFLogicCore.__init__(self, default_context())  # the application's scene in Slicer; standalone with slicer-core
        if not self.context.standalone:  # the segments' terminology, known to Slicer's terminology selector
            register_terminology(slicer.modules.terminologies.logic())


class NSLFSlicerTest(ScriptedLoadableModuleTest):
    """Runs the CI scenario (``NSLFSlicerLib.testing.run_scenario``) inside Slicer."""

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        self.setUp()
        self.test_NSLFSlicer_scenario()

    def test_NSLFSlicer_scenario(self) -> None:
        from NSLFSlicerLib.dependencies import missing_for_self_test
        from NSLFSlicerLib.testing import run_scenario

        missing = missing_for_self_test()
        if missing:  # a fresh Slicer (e.g. the extension's CTest run) has not been through the dependency step
            self.delayDisplay(_("NSLF self-test skipped: {packages} not installed (press Fuse once to install them).")
                              .format(packages=", ".join(missing)))  # fmt: skip
            self.skipTest(f"NSLF dependencies not installed: {', '.join(missing)}")
        self.delayDisplay(_("Running the NSLF scenario on a tiny oblique phantom"))
        with tempfile.TemporaryDirectory(prefix="nslf-test-") as tmp:
            run_scenario(NSLFSlicerLogic(), os.path.join(tmp, "scenario"))
        self.delayDisplay(_("Test passed"))
