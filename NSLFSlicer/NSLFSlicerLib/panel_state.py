"""The panel's state and decisions, without Qt: what to enable, what to restore, in which order.

``NSLFSlicer.py``'s widget only wires Qt signals to these objects and copies their answers onto
widgets, so the orderings that went wrong in the widget (a saved choice overwritten while a combo
box fills, a selection signal firing before the list it indexes exists, a whole dataset checked in
the GUI thread on every keystroke) are decided and tested here, in plain Python.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Generic, TypeVar

T = TypeVar("T")

#: The project's repository (also named in the module's help text).
PROJECT_URL = "https://github.com/nslfslicer/SlicerNSLF"
#: The README section that says the shipped model does not work on real MRI yet and how to validate one.
VALIDATION_ADVICE_URL = PROJECT_URL + "#two-commands"
#: What a shipped model is until its registry entry reports results on real MRI (``evaluation.real_mri``).
SYNTHETIC_CAUTION = ("Trained on synthetic phantoms; not validated on real MRI. Use it to try the pipeline, not on patients: "
                     "validate a model on labelled scans of your own site first "
                     f'(<a href="{VALIDATION_ADVICE_URL}">how</a>).')  # fmt: skip


def path_text(value: Any) -> str:
    """What a path field shows: ``""`` for no path (``None``, ``""``, or the ``"."`` an empty ``Path`` becomes)."""
    if value is None:
        return ""
    text = str(value).strip()
    return "" if text in ("", ".") else text


def can_start_training(data: Any, run_dir: Any, running: bool) -> bool:
    """Start is enabled only when a dataset and a run folder are chosen and no training runs."""
    return bool(path_text(data)) and bool(path_text(run_dir)) and not running


def confidence_text(confidence: Any) -> tuple[str, bool]:
    """The panel's confidence line after a segmentation and whether it is a warning (``("", False)`` without one).

    ``confidence`` is the run's :class:`nslfcore.inference.Confidence` (:attr:`.logic.NSLFOutputs.confidence`);
    a low one adds its plain warning sentence.
    """
    if confidence is None:
        return "", False
    text = f"Confidence: {confidence.summary()}."
    return (f"{text} {confidence.warning}", True) if confidence.low else (text, False)


def model_info_text(entry: Any) -> str:
    """The rich text under the model selector for a :class:`.model_manager.ModelEntry`: its description (or metrics).

    A shipped model whose registry ``evaluation`` has no ``real_mri`` results is first labelled as what it
    is, :data:`SYNTHETIC_CAUTION` (in bold red, with the link to the README's validation advice).
    """
    text = html.escape(entry.info.description or entry.metrics())
    if entry.source == "shipped" and not (entry.info.evaluation or {}).get("real_mri"):
        return f'<p style="color: #c0392b"><b>{SYNTHETIC_CAUTION}</b></p><p>{text}</p>'
    return text


def run_blocker(nodes: dict[str, Any], output_volume: Any) -> str:
    """Why Fuse / Segment cannot be pressed for these inputs, ``""`` when they can: fewer than three of the four
    inputs (:func:`.checks.missing_problem`) or an input chosen as the output volume (:func:`.checks.output_problem`).

    Cheap (no voxels read): called on every change of the parameter node; the full checks run on the press.
    """
    from .checks import missing_problem, output_problem

    return missing_problem(nodes) or output_problem(nodes, output_volume) or ""


def shared_gpu(run_device: str, training_device: str, choices: Sequence[tuple[str, str]]) -> str:
    """One sentence when a Fuse / Segment run and a training would use the same GPU, else ``""``.

    ``choices``: the device list (:attr:`DeviceList.choices`); ``"auto"`` means its first GPU (the CPU when it
    lists none) and ``"cuda"`` means ``"cuda:0"``, as :func:`nslfcore.inference.resolve_device` decides. Two jobs
    on one GPU compete for its memory and one of them fails with an out-of-memory error.
    """
    gpus = [spec for _, spec in choices if spec.startswith("cuda:")]

    def resolved(device: str) -> str:
        device = "cuda:0" if device == "cuda" else device
        return (gpus[0] if gpus else "cpu") if device == "auto" else device

    gpu = resolved(run_device)
    if not gpu.startswith("cuda") or gpu != resolved(training_device):
        return ""
    name = next((label for label, spec in choices if spec == gpu), gpu)
    return (f"The training uses {name}; fusing or segmenting there at the same time can run out of GPU memory. Choose "
            "the CPU or another GPU under Device (and Training device), or wait for the other job to end.")  # fmt: skip


def restore_index(values: Sequence[str], saved: str | None, default: str | None = None) -> int:
    """The index to select after filling a combo box: the saved value, else ``default``, else the first (``-1`` if empty).

    Fill the combo box with its signals blocked, select this index, and only then connect the signal
    that saves the choice: otherwise adding the first item saves it over the user's choice.
    """
    for wanted in (saved, default):
        if wanted is not None and wanted in values:
            return list(values).index(wanted)
    return 0 if values else -1


def finished_status(done: str, message: str = "") -> str:
    """The status line after a Fuse/Segment run: ``done`` (its time, translated) and, when a sequence was
    missing, the sentence saying which and what that costs (``message``, :attr:`.logic.NSLFOutputs.message`)."""
    return f"{done} {message}" if message else done


class ChoiceList(Generic[T]):
    """The entries behind a combo box (models), replaced BEFORE the combo box is refilled.

    ``replace(entries, wanted)`` stores the new list and returns the index to select, so that when
    the selection signal fires it indexes the list the user sees (not the previous one, which made
    the info line blank at first open and saved the wrong model after Add or Remove).
    """

    def __init__(self, key: Callable[[T], str]) -> None:
        self.key = key
        self.entries: list[T] = []

    def replace(self, entries: Sequence[T], wanted: str | None) -> int:
        self.entries = list(entries)
        return restore_index([self.key(e) for e in self.entries], wanted)

    def at(self, index: int) -> T | None:
        return self.entries[index] if 0 <= index < len(self.entries) else None


class Show3DPreference:
    """"Show 3D" is on after each segmentation run unless the user turned it off themselves."""

    def __init__(self) -> None:
        self.user_turned_off = False

    def user_toggled(self, checked: bool) -> None:
        """A click by the user (not a programmatic change, which the widget makes with signals blocked)."""
        self.user_turned_off = not checked

    def after_segmentation(self) -> bool:
        """Whether to show the surfaces after a segmentation run."""
        return not self.user_turned_off


class DatasetChecker:
    """Checks a training dataset folder in a worker thread, once its path has stopped changing.

    ``path_changed(path, now)`` is all a keystroke does; ``poll(now)`` (from the panel's timer)
    starts the check ``delay_s`` after the last change, in a thread (a whole dataset is read), and
    returns ``(path, message)`` once it is done. A result for a path that has changed since is
    dropped. ``check(path)`` returns an object with ``message()`` (:func:`.training_job.check_dataset`).
    """

    def __init__(self, check: Callable[[str], Any], delay_s: float = 0.6) -> None:
        self.check = check
        self.delay_s = delay_s
        self._pending: tuple[str, float] | None = None
        self._running: tuple[str, Future] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nslf-dataset-check")

    def path_changed(self, path: Any, now: float) -> None:
        self._pending = (path_text(path), now)

    @property
    def busy(self) -> bool:
        return self._pending is not None or self._running is not None

    def poll(self, now: float) -> tuple[str, str] | None:
        if self._pending is not None and self._running is None and now - self._pending[1] >= self.delay_s:
            path, _ = self._pending
            self._pending = None
            if not path:
                return "", "Choose the folder that holds the training cases."
            self._running = (path, self._executor.submit(self.check, path))
        if self._running is None or not self._running[1].done():
            return None
        path, future = self._running
        self._running = None
        if self._pending is not None:  # the path changed while this one was being checked
            return None
        try:
            return path, future.result().message()
        except ModuleNotFoundError as error:  # nibabel before the dependency step
            return path, (f"{Path(path).name}: checking it needs {error.name}, one of NSLF's dependencies; press Start "
                          "once to install them, then choose the folder again.")  # fmt: skip
        except Exception as error:  # noqa: BLE001 - shown in the panel, never raised into Qt
            return path, f"{Path(path).name}: could not be checked ({error})."

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


class PreprocessProposal:
    """Whether "Raw scans: register and skull-strip" is ticked, as the selected inputs change.

    ``inputs_changed(key, reason, checked)`` is called whenever the parameter node changes; ``key``
    names the selected input nodes (their IDs), ``reason()`` gives :func:`.checks.preprocessing_reason`'s
    sentence or ``None`` (called only for new inputs: it reads voxels), and ``checked`` is the
    option's state now. It returns ``(checked, text)`` to show when the inputs differ from the last
    call, else ``None``: the user's own tick or untick is never undone for the same inputs. New
    inputs with a reason tick the option and say why; new inputs without one untick it only if it
    was this proposal that ticked it.
    """

    def __init__(self) -> None:
        self.inputs: tuple | None = None
        self.proposed = False

    def inputs_changed(self, key: tuple, reason: Callable[[], str | None], checked: bool) -> tuple[bool, str] | None:
        if key == self.inputs:
            return None
        self.inputs = key
        sentence = reason()
        if sentence:
            self.proposed = self.proposed or not checked
            return True, sentence
        if self.proposed:
            self.proposed = False
            return False, ""
        return checked, ""


class DeviceList:
    """The device selector's entries, found in a child process so that torch never loads in Slicer's.

    :attr:`choices` starts as :data:`.engine.DEFAULT_DEVICES` (automatic, CPU). :meth:`refresh` starts
    the query (``start()`` returns a started :class:`.process_runner.ProcessRunner` of
    :func:`.engine.device_query_command`) when torch is installed (``torch_installed()``, which must
    not import it) and not yet queried: at panel open, and again after the dependency step, which
    may just have installed torch. :meth:`poll` (from the panel's timer) returns the new choices
    once the child has answered, else ``None``; the answer is kept for the session.
    """

    def __init__(self, start: Callable[[], Any], torch_installed: Callable[[], bool] | None = None) -> None:
        from .engine import DEFAULT_DEVICES

        self.start = start
        self.torch_installed = torch_installed or _torch_installed
        self.choices: list[tuple[str, str]] = list(DEFAULT_DEVICES)
        self.queried = False  # the child has answered with torch's devices
        self.error = ""  # why the last query failed (its log tail), "" if it did not
        self._runner: Any = None

    @property
    def busy(self) -> bool:
        return self._runner is not None

    def refresh(self) -> bool:
        """Start the query unless it has answered, is running or torch is missing; returns whether it started."""
        if self.queried or self._runner is not None or not self.torch_installed():
            return False
        try:
            self._runner = self.start()
        except OSError as error:  # no PythonSlicer: the panel still opens, with automatic and CPU
            self.error = str(error)
            logging.warning("NSLF could not list the GPUs (Automatic and CPU stay offered): %s", error)
            return False
        return True

    def poll(self) -> list[tuple[str, str]] | None:
        runner = self._runner
        if runner is None:
            return None
        runner.poll()
        if not runner.finished:
            return None
        self._runner = None
        devices = (runner.result or {}).get("devices") if runner.succeeded else None
        if not devices:
            self.error = runner.failure_message()
            logging.warning("NSLF could not list the GPUs (Automatic and CPU stay offered): %s", self.error)
            return None
        self.choices, self.queried, self.error = [(str(label), str(spec)) for label, spec in devices], True, ""
        return self.choices


def _torch_installed() -> bool:
    """Whether torch can be found on the path (found, not imported)."""
    import importlib.util

    importlib.invalidate_caches()  # torch may have been installed since the last look
    return importlib.util.find_spec("torch") is not None


class BackgroundCall:
    """One call of seconds (a model's download, a model file's validation) in a worker thread, polled from the panel's timer.

    ``BackgroundCall(function, *args, progress=True)`` passes ``progress=self.report`` to ``function``, whose
    last message is :attr:`message` (the panel's status line). :attr:`done` says when it has returned;
    :meth:`result` then gives its value or raises its exception, on the calling (GUI) thread.
    """

    def __init__(self, function: Callable[..., Any], *args: Any, progress: bool = False, **kwargs: Any) -> None:
        self.message = ""
        if progress:
            kwargs["progress"] = self.report
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nslf-call")
        self._future = executor.submit(function, *args, **kwargs)
        executor.shutdown(wait=False)

    def report(self, fraction: float, message: str) -> None:
        self.message = message

    @property
    def done(self) -> bool:
        return self._future.done()

    def result(self) -> Any:
        return self._future.result()
