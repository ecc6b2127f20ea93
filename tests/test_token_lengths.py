"""experiments.token_lengths: the statistics, and a missing archive or a bad --out as one
line."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from experiments import cli
from experiments.cli import UserError
from experiments.token_lengths import length_stats, main
from hw3_jax.data.errors import DataError
from hw3_jax.train.stopping import StopRequested
from hw3_jax.train.workdir import WorkdirError


def test_length_stats():
    stats = length_stats(np.array([100, 200, 300, 600]))
    assert stats["reviews"] == 4 and stats["mean"] == 300.0
    assert stats["share_over"] == {"128": 0.75, "256": 0.5, "384": 0.25, "512": 0.25}
    assert stats["percentiles"]["50"] == 250


def test_a_missing_archive_is_one_error_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.token_lengths", "--archive",
         str(tmp_path / "missing.tar.gz")], capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "missing.tar.gz" in lines[0]


@pytest.mark.parametrize("out", ["a_file/stats.json", ".", "", "new_folder/"])
def test_a_bad_out_fails_before_reading(tmp_path, out):
    """An --out that cannot be written (its folder is a file, or it is a folder) is refused
    before the archive is read: the missing archive is not what the error names."""
    (tmp_path / "a_file").write_text("x")
    with pytest.raises((UserError, WorkdirError)) as e:
        main(["--archive", str(tmp_path / "missing.tar.gz"), "--out", out and f"{tmp_path}/{out}"])
    assert "--out" in str(e.value) and "missing.tar.gz" not in str(e.value)


@pytest.mark.parametrize("error", [DataError("no archive x.tar.gz: pass --archive"),
                                   WorkdirError("--out x is not writable")])
def test_data_and_workdir_errors_are_one_line_in_every_experiment(error, capsys):
    """cli.run_main reports them without each experiment listing them."""
    def failing() -> int:
        raise error
    assert cli.run_main(failing) == 2
    assert capsys.readouterr().err == f"error: {error}\n"


@pytest.mark.parametrize("resumable", [False, True])
def test_ctrl_c_names_resume_only_where_the_command_has_it(resumable, capsys):
    def stopped() -> int:
        raise StopRequested("stopped after step 3 (batch 3 of epoch 1), saved in w/latest")
    assert cli.run_main(stopped, resumable=resumable) == 130
    assert capsys.readouterr().err == ("stopped after step 3 (batch 3 of epoch 1), saved in "
                                       "w/latest; continue with --resume\n" if resumable
                                       else "interrupted\n")


def test_ctrl_c_outside_the_training_loop_says_interrupted(capsys):
    """A bare Ctrl-C (in tokenizing, say) of a resumable command: no empty message."""
    def interrupted() -> int:
        raise KeyboardInterrupt
    assert cli.run_main(interrupted, resumable=True) == 130
    assert capsys.readouterr().err == "interrupted; continue with --resume\n"
