"""The ``nslf`` command line itself: user errors (``NSLFError``) versus unexpected ones, and command modules that fail to import."""

from __future__ import annotations

import pytest

from nslfcore import cli
from nslfcore.errors import NSLFError


def test_project_errors_share_one_base_and_keep_their_standard_bases():
    from nslfcore.data.output import OutputBusyError
    from nslfcore.data.validation import DataValidationError
    from nslfcore.model_store import ModelError
    from nslfcore.training.events import EventSchemaError
    from nslfcore.training.run import TrainingSetupError

    for error, standard in ((ModelError, ValueError), (TrainingSetupError, ValueError), (EventSchemaError, ValueError),
                            (DataValidationError, ValueError), (OutputBusyError, OSError)):  # fmt: skip
        assert issubclass(error, NSLFError) and issubclass(error, standard), error


def test_a_user_error_is_its_message_even_under_debug(tmp_path, capsys, monkeypatch):
    import nslfcore.commands.check_data as check_data

    def refuse(args):
        raise NSLFError(f"{tmp_path} holds no cases;\n choose the folder of a data set")

    monkeypatch.setattr(check_data, "run", refuse)
    for debug in ([], ["--debug"]):
        assert cli.main([*debug, "check-data", str(tmp_path)]) == 1
        assert capsys.readouterr().err.strip() == f"nslf check-data: error: {tmp_path} holds no cases; choose the folder of a data set."


@pytest.fixture
def broken_commands(tmp_path, monkeypatch):
    """``COMMAND_MODULES`` with a missing module and one whose import fails, around a working one."""
    (tmp_path / "nslf_broken_command.py").write_text("import nslf_no_such_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    modules = ("nslfcore.commands.demo", "nslfcore.commands.not_there", "nslf_broken_command")
    monkeypatch.setattr(cli, "COMMAND_MODULES", modules)
    return modules


def test_help_lists_a_command_that_fails_to_import_as_unavailable(broken_commands, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--help"])
    assert exit_.value.code == 0
    listing = " ".join(capsys.readouterr().out.split())
    assert "demo run the shipped model" in listing
    assert "not-there unavailable (ModuleNotFoundError: No module named 'nslfcore.commands.not_there')" in listing
    assert "nslf-broken-command unavailable (ModuleNotFoundError: No module named 'nslf_no_such_dependency')" in listing


@pytest.mark.parametrize(
    "command, module, missing",
    [("not-there", "nslfcore.commands.not_there", "nslfcore.commands.not_there"),
     ("nslf-broken-command", "nslf_broken_command", "nslf_no_such_dependency")],
)  # fmt: skip
def test_running_a_command_that_fails_to_import_names_the_module_and_the_error(broken_commands, command, module, missing, capsys):
    assert cli.main([command, "--any", "argument"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"nslf {command}: error: the command module {module} cannot be imported"), err
    assert f"No module named '{missing}'" in err[0] and "Traceback" not in err[0]
    with pytest.raises(ModuleNotFoundError, match=missing):  # --debug: the import error itself, with its traceback
        cli.main(["--debug", command])
