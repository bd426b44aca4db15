"""The console commands: every command answers --help, and the demo runs on the bundled excerpt."""

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from stream_ecg.cli import app
from trainer.cli import app as trainer_app

runner = CliRunner()


@pytest.mark.parametrize("args", [[], ["demo"], ["data"], ["data", "fetch"], ["data", "report"], ["version"]])
def test_every_stream_ecg_command_has_help(args):
    result = runner.invoke(app, [*args, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


@pytest.mark.parametrize("args", [[], ["train"], ["experiment"], ["experiment", "paper"]])
def test_every_trainer_command_has_help(args):
    result = runner.invoke(trainer_app, [*args, "--help"])
    assert result.exit_code == 0, result.output


def test_demo_streams_the_excerpt_and_matches_the_batch_path():
    result = runner.invoke(app, ["demo", "--record", "232", "--chunk-ms", "137"])
    assert result.exit_code == 0, result.output
    assert "max|stream-batch|_mV" in result.output
    row = next(line for line in result.output.splitlines() if "max|stream-batch|" in line)
    assert float(row.split("│")[2]) <= 1e-5
    assert "windows_with_S" in result.output


def test_console_script_is_installed():
    out = subprocess.run([sys.executable, "-m", "stream_ecg.cli", "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "demo" in out.stdout
