"""Panel decisions of issue 33 that need no Qt: one GPU is not shared by a run and a training."""

from __future__ import annotations

from pathlib import Path

from NSLFSlicerLib.panel_state import shared_gpu

ROOT = Path(__file__).resolve().parents[2]
AUTO, CPU = ("Automatic (GPU if available)", "auto"), ("CPU", "cpu")
TWO_GPUS = [AUTO, ("GPU 0: H100 (80 GiB)", "cuda:0"), ("GPU 1: A40 (48 GiB)", "cuda:1"), CPU]


def test_a_run_and_a_training_on_the_same_gpu_are_refused_with_its_name():
    sentence = shared_gpu("auto", "cuda:0", TWO_GPUS)
    assert sentence.startswith("The training uses GPU 0: H100 (80 GiB); fusing or segmenting there at the same time")
    assert shared_gpu("cuda", "auto", TWO_GPUS) == sentence and shared_gpu("auto", "auto", TWO_GPUS) == sentence
    assert shared_gpu("cuda:1", "cuda:1", TWO_GPUS).startswith("The training uses GPU 1: A40 (48 GiB);")


def test_different_gpus_or_the_cpu_are_fine():
    assert shared_gpu("cuda:1", "auto", TWO_GPUS) == ""
    assert shared_gpu("cpu", "cuda:0", TWO_GPUS) == "" and shared_gpu("auto", "cpu", TWO_GPUS) == ""
    assert shared_gpu("cpu", "cpu", TWO_GPUS) == ""  # the CPU is shared, slower but never out of GPU memory
    assert shared_gpu("auto", "auto", [AUTO, CPU]) == ""  # no GPU: automatic is the CPU


def test_the_widget_asks_before_either_job_starts():
    source = (ROOT / "NSLFSlicer" / "NSLFSlicer.py").read_text()
    assert "shared_gpu(self.ui.deviceComboBox.currentData, self.training.settings.device, self.devices.choices)" in source
    assert "shared_gpu(self.job.device, self.ui.trainingDeviceComboBox.currentData, self.devices.choices)" in source


def test_a_model_download_or_validation_runs_off_the_gui_thread_and_hands_back_its_result_or_error():
    import threading

    from NSLFSlicerLib.panel_state import BackgroundCall

    release, threads = threading.Event(), []

    def work(name, progress):
        threads.append(threading.get_ident())
        progress(0.5, f"downloaded half of {name}")
        release.wait(60)
        return name.upper()

    call = BackgroundCall(work, "model.pt", progress=True)
    for _ in range(600):  # until the worker has reported (at most 60 s)
        if call.message:
            break
        threading.Event().wait(0.1)
    assert call.message == "downloaded half of model.pt" and not call.done  # the caller was not blocked
    release.set()
    for _ in range(600):
        if call.done:
            break
        threading.Event().wait(0.1)
    assert call.result() == "MODEL.PT" and threads != [threading.get_ident()]

    def fail():
        raise ValueError("Model file x.pt gives NaN or infinite outputs; its weights are broken.")

    failed = BackgroundCall(fail)
    for _ in range(600):
        if failed.done:
            break
        threading.Event().wait(0.1)
    try:
        failed.result()
    except ValueError as error:
        assert str(error).startswith("Model file x.pt gives NaN")
    else:
        raise AssertionError("the worker's error was not handed back")


def test_the_widget_adds_and_downloads_models_through_a_background_call():
    import ast

    tree = ast.parse((ROOT / "NSLFSlicer" / "NSLFSlicer.py").read_text())
    functions = {n.name: ast.unparse(n) for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
    assert "BackgroundCall(add_model, path, self.userModelsFolder())" in functions["onAddModel"]
    assert "BackgroundCall(download, entry, progress=True)" in functions["onDownloadModel"]
    assert "self.pollModelCall()" in functions["onPoll"]


def test_a_dataset_check_before_the_dependency_step_says_what_to_do():
    from NSLFSlicerLib.panel_state import DatasetChecker

    def check(path):
        raise ModuleNotFoundError("No module named 'nibabel'", name="nibabel")

    checker = DatasetChecker(check, delay_s=0.0)
    checker.path_changed("/data/BraTS2021", 0.0)
    answer = None
    for step in range(600):
        answer = checker.poll(float(step))
        if answer is not None:
            break
        threading_wait(0.1)
    checker.shutdown()
    assert answer == ("/data/BraTS2021", ("BraTS2021: checking it needs nibabel, one of NSLF's dependencies; press Start once "
                                          "to install them, then choose the folder again."))  # fmt: skip


def threading_wait(seconds: float) -> None:
    import threading

    threading.Event().wait(seconds)
