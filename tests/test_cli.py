"""The console commands: every command answers --help, and the demo runs on the bundled excerpt."""

import json
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


@pytest.mark.parametrize("args", [[], ["train"], ["experiment"], ["experiment", "paper"], ["validate"], ["recard"], ["by-fold"], ["member-check"], ["guard"], ["summary"]])
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


def test_report_sets_the_shipped_model_beside_earlier_ones(tmp_path):
    """results.md keeps the replaced default's DS2 numbers in view (docs/results/<folder>/bedside_ds2.json)."""
    import json

    from trainer.report import render

    def ds2(model, command, v_se):
        per = {c: {"se": v_se, "ppv": 0.5} for c in ("S", "V")}
        win = {c: {"se": 0.5, "precision": 0.5, "auc": 0.9} for c in ("S", "V")}
        return {"model": model, "command": command, "seconds": 1.0,
                "whole_record": {"beat": per, "window": win}, "from_5_min": {"beat": per, "window": win}}

    (tmp_path / "bedside-v1").mkdir()
    (tmp_path / "bedside_ds2.json").write_text(json.dumps(ds2("new", "trainer export --run a", 0.9)))
    (tmp_path / "bedside-v1" / "bedside_ds2.json").write_text(json.dumps(ds2("old", "trainer export --run b", 0.25)))
    text = render(tmp_path)
    assert "| V | 90.0 % |" in text
    earlier = [line for line in text.splitlines() if line.startswith("| `bedside-v1`")]
    assert len(earlier) == 1 and "`trainer export --run b`" in earlier[0] and "25.0 %" in earlier[0]
    # once the default model (edge_models/DEFAULT) has its own folder, it heads the page and the top-level file joins the rest
    from stream_ecg.card import default_model_dir

    (tmp_path / default_model_dir().name).mkdir()
    (tmp_path / default_model_dir().name / "bedside_ds2.json").write_text(json.dumps(ds2("default", "trainer recard c", 0.7)))
    text = render(tmp_path)
    assert "| V | 70.0 % |" in text and f"Source: `docs/results/{default_model_dir().name}/bedside_ds2.json`" in text
    assert any(line.startswith("| `new (top level)`") and "90.0 %" in line for line in text.splitlines())


def test_recorded_trainer_command_can_be_pasted_back(monkeypatch):
    """Cards and metrics.json quote the command; a JSON option must survive the shell."""
    import shlex

    from trainer.cli import _command

    argv = ["trainer", "train", "--model", '{"bypass": 2, "attended_tail": 1}', "--seeds", "4,5"]
    monkeypatch.setattr(sys, "argv", argv)
    assert shlex.split(_command()) == argv


def test_export_names_its_output_explicitly(flat):
    """A bare `trainer export` once defaulted to a shipped model's folder and name; now it refuses to guess."""
    result = runner.invoke(trainer_app, ["export", "--run", "runs/none"])
    assert result.exit_code == 2 and "--out" in flat(result.output)


def test_by_record_refuses_a_row_a_file_lacks(tmp_path, flat):
    from pathlib import Path

    one = Path(__file__).parents[1] / "docs/results/validate_guard_4567.json"  # one row
    grid = Path(__file__).parents[1] / "docs/results/validate_v_threshold_stretch_4567.json"  # five rows
    ok = runner.invoke(trainer_app, ["by-record", "--files", str(grid), "--new-files", str(one), "--base", "1", "--new", "0"])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.output)["total"]["V"] == {"up": 0, "down": 0, "same": 17}  # the guard left set 4-7 as it was
    bad = runner.invoke(trainer_app, ["by-record", "--files", str(one), "--new-files", str(one), "--base", "1", "--new", "0"])
    assert bad.exit_code == 2 and "row 1 does not exist" in flat(bad.output)


def test_train_refuses_an_unknown_peak_detector_before_reading_data(tmp_path, flat):
    result = runner.invoke(trainer_app, ["train", "--out", str(tmp_path / "r"), "--peak-detector", "wavelet", "--data", str(tmp_path)])
    assert result.exit_code == 2 and "expected one of ('energy', 'energy_t')" in flat(result.output)
    assert not (tmp_path / "r").exists()
