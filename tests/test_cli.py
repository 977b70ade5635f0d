"""The command line refuses bad input clearly, before any Ray process starts (exit code 2)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml
from PIL import Image

from resweep.cli import main

from conftest import tiny_config_dict


class _Result:
    def __init__(self, returncode: int, stdout: str, stderr: str):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


@pytest.fixture
def train(capsys):
    """Run `resweep train` in-process (the refusals happen before Ray would start)."""

    def run(tmp_path, config: dict | str) -> _Result:
        path = tmp_path / "config.yaml"
        path.write_text(config if isinstance(config, str) else yaml.safe_dump(config))
        code = main(["train", str(path), "--output", str(tmp_path / "out")])
        captured = capsys.readouterr()
        return _Result(code, captured.out, captured.err)

    return run


def _folder_config(folder) -> dict:
    return tiny_config_dict(**{"data.train": {"kind": "folder", "path": str(folder)}})


def _write_images(folder, n=2, size=(40, 40)):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new("RGB", size, (i * 40, 90, 200)).save(folder / f"img{i}.png")


def _assert_refused(result, *words):
    assert result.returncode == 2, result.stdout + result.stderr
    for word in words:
        assert str(word) in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_missing_folder(tmp_path, train):
    _assert_refused(train(tmp_path, _folder_config(tmp_path / "nope")), tmp_path / "nope")


def test_empty_folder(tmp_path, train):
    (tmp_path / "empty").mkdir()
    _assert_refused(train(tmp_path, _folder_config(tmp_path / "empty")), tmp_path / "empty")


def test_corrupted_file(tmp_path, train):
    folder = tmp_path / "imgs"
    _write_images(folder)
    data = (folder / "img1.png").read_bytes()
    (folder / "img1.png").write_bytes(data[: len(data) // 2])
    _assert_refused(train(tmp_path, _folder_config(folder)), "img1.png")


def test_image_smaller_than_crop(tmp_path, train):
    folder = tmp_path / "imgs"
    _write_images(folder, size=(40, 40))
    Image.new("RGB", (10, 10)).save(folder / "tiny.png")
    _assert_refused(train(tmp_path, _folder_config(folder)), "tiny.png")


def test_unknown_model(tmp_path, train):
    _assert_refused(train(tmp_path, tiny_config_dict(**{"model.name": "edsr_tinny"})), "edsr_tiny", "model.name")


def test_malformed_yaml(tmp_path, train):
    _assert_refused(train(tmp_path, "model: {name: edsr_tiny\ntrain: [\n"), "malformed YAML", "line")


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["run", "--help"]])
def test_help(argv):
    out = subprocess.run([sys.executable, "-m", "resweep.cli", *argv], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "usage" in out.stdout


def test_presets_listed_without_data_variable(monkeypatch, capsys):
    """Listing reads the YAML only: no preset "cannot load" because $RESWEEP_DATA is unset,
    and the ones that need it say so."""
    from resweep.presets import list_presets

    monkeypatch.delenv("RESWEEP_DATA", raising=False)
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    assert "cannot" not in out
    heads = {line.split()[0].removeprefix("preset:"): line for line in out.splitlines() if line.startswith("preset:")}
    assert set(heads) == set(list_presets())
    assert "needs $RESWEEP_DATA (not set)" in heads["spn_table8"]
    assert "needs" not in heads["demo"]  # the demo's photographs ship with scikit-image
    monkeypatch.setenv("RESWEEP_DATA", "/data")
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    assert "needs $RESWEEP_DATA" in out and "(not set)" not in out


def test_running_a_preset_without_its_variable_is_refused(monkeypatch, capsys, tmp_path):
    monkeypatch.delenv("RESWEEP_DATA", raising=False)
    code = main(["run", "preset:spn_table8", "--dir", str(tmp_path / "s")])
    err = capsys.readouterr().err
    assert code == 2 and "RESWEEP_DATA is not set" in err and "Traceback" not in err
    assert not (tmp_path / "s").exists()


def test_paper_schedule_refused_for_a_study_without_one(tmp_path, capsys):
    study = {"name": "no-paper", "base": tiny_config_dict(), "seeds": [0],
             "search": {"algorithm": "grid"}, "objectives": [{"metric": "eval.demo-eval.psnr_y", "mode": "max"}]}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    code = main(["run", str(path), "--paper-schedule", "--dir", str(tmp_path / "s")])
    err = capsys.readouterr().err
    assert code == 2 and "paper_schedule" in err and "--paper-schedule" in err, err
    assert not (tmp_path / "s").exists()
