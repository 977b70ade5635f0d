"""Preflight checks every file a config names before any Ray process starts: a missing file, a
folder without a checkpoint, a pickle payload (refused by weights_only, and never executed),
missing feature-network weights. The CLI answers with one `resweep: error:` line naming the
field and the file."""

from __future__ import annotations

import os

import pytest
import torch
import yaml

from resweep.cli import main
from resweep.config import ExperimentConfig
from resweep.engine.checkpoint import save_checkpoint
from resweep.engine.preflight import named_paths, preflight
from resweep.errors import ConfigError, DataError
from resweep.models import create_model

from conftest import tiny_config_dict


class _Payload:
    """Pickled, it asks the loader to run a shell command that leaves a marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def files(tmp_path):
    """A real state dict, a pickle payload saved as a .pt file, a checkpoint folder holding a
    payload, and the marker that shows whether any payload ran."""
    marker = tmp_path / "PAYLOAD_RAN"
    good = tmp_path / "good.pt"
    torch.save(create_model("edsr_tiny", scale=2).state_dict(), good)
    evil = tmp_path / "evil.pt"
    torch.save({"weight": torch.zeros(2), "extra": _Payload(marker)}, evil)
    evil_ckpt = tmp_path / "evil_ckpt"
    evil_ckpt.mkdir()
    (evil_ckpt / "checkpoint.pt").write_bytes(evil.read_bytes())
    return {"good": good, "evil": evil, "evil_ckpt": evil_ckpt, "marker": marker, "root": tmp_path}


def _config(**overrides) -> ExperimentConfig:
    return ExperimentConfig.from_dict(tiny_config_dict(**overrides))


def _refused(config: ExperimentConfig, field: str, *words) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        preflight(config, verify_images=False)
    err = info.value
    assert err.field == field, str(err)
    for word in words:
        assert str(word) in str(err), str(err)
    assert "\n" not in str(err)  # the one-line form
    return err


def test_every_named_path_is_found_with_its_field(files):
    config = _config(**{
        "model.init_from": str(files["good"]),
        "methods.spn": {"enabled": False, "feature_weights": str(files["good"]),
                        "negative_kind": "pretrained_fixed", "pretrained_negative": str(files["evil"])},
    })
    found = dict(named_paths(config))
    assert found == {
        "model.init_from": files["good"],
        "methods.spn.pretrained_negative": files["evil"],
        "methods.spn.feature_weights": files["good"],
    }  # data paths are not here: they are checked image by image


def test_good_weights_pass(files):
    preflight(_config(**{"model.init_from": str(files["good"])}), verify_images=False)
    ckpt = save_checkpoint({"iteration": 3, "model": torch.load(files["good"], weights_only=True)},
                           files["root"] / "ckpt")
    preflight(_config(**{"model.init_from": str(ckpt.parent)}), verify_images=False)


def test_pickle_payload_is_refused_and_never_runs(files):
    _refused(_config(**{"model.init_from": str(files["evil"])}), "model.init_from",
             files["evil"], "not a safe torch file", "posix.system")
    _refused(_config(**{"model.init_from": str(files["evil_ckpt"])}), "model.init_from",
             files["evil_ckpt"] / "checkpoint.pt")
    spn = {"negative_kind": "pretrained_fixed", "pretrained_negative": str(files["evil"]),
           "allow_random_features": True}
    _refused(_config(**{"methods.spn": spn}), "methods.spn.pretrained_negative", files["evil"])
    # a plain pickle file (not torch's zip format) is refused the same way
    raw = files["root"] / "raw.pth"
    import pickle

    raw.write_bytes(pickle.dumps(_Payload(files["marker"])))
    _refused(_config(**{"model.init_from": str(raw)}), "model.init_from", raw, "not a safe torch file")
    assert not files["marker"].exists()


def test_missing_file_folder_without_checkpoint_and_garbage(files):
    missing = files["root"] / "nope.pt"
    _refused(_config(**{"model.init_from": str(missing)}), "model.init_from", "file not found", missing)
    empty = files["root"] / "empty_run"
    empty.mkdir()
    _refused(_config(**{"model.init_from": str(empty)}), "model.init_from", "no checkpoint.pt", empty)
    garbage = files["root"] / "garbage.pt"
    garbage.write_bytes(b"this is not a torch file")
    _refused(_config(**{"model.init_from": str(garbage)}), "model.init_from", "cannot read", garbage)


def test_eco_teacher_checkpoint_is_checked(files):
    eco = {"enabled": True, "teacher": {"checkpoint": str(files["evil_ckpt"])}}
    try:
        config = _config(**{"task.quantize_input": False, "methods.eco": eco})
    except ConfigError as exc:  # the ECO config itself may refuse the file first: also fine
        assert "evil_ckpt" in str(exc)
        return
    _refused(config, "methods.eco.teacher.checkpoint", files["evil_ckpt"] / "checkpoint.pt")


def test_missing_feature_network_weights(files, monkeypatch):
    monkeypatch.delenv("RESWEEP_VGG_WEIGHTS", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(files["root"] / "empty_torch_home"))
    spn = {"enabled": True, "weight": 1e-4}
    _refused(_config(**{"methods.spn": spn}), "methods.spn.feature_weights",
             "RESWEEP_VGG_WEIGHTS", "allow_random_features")
    preflight(_config(**{"methods.spn": {**spn, "allow_random_features": True}}), verify_images=False)
    # switched off (a study's baseline row keeps the settings): never built, nothing to look up
    preflight(_config(**{"methods.spn": {**spn, "enabled": False}}), verify_images=False)
    # weights found through the environment variable are checked like a named file
    monkeypatch.setenv("RESWEEP_VGG_WEIGHTS", str(files["evil"]))
    _refused(_config(**{"methods.spn": spn}), "methods.spn.feature_weights", "not a safe torch file")
    assert not files["marker"].exists()


def test_cli_refuses_in_one_line_before_ray(files, tmp_path, capsys):
    config = tiny_config_dict(**{"model.init_from": str(files["evil"])})
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    code = main(["train", str(path), "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("resweep: error:"), err
    assert "model.init_from" in err and str(files["evil"]) in err and "not a safe torch file" in err
    assert not (tmp_path / "out").exists()  # refused before anything was written or started
    assert not files["marker"].exists()


# --------------------------------------------------------------------------- studies: every configuration
def _study(tmp_path, **fields):
    from resweep.study.spec import study_from_dict

    return study_from_dict({"name": "pre", "base": tiny_config_dict(), "seeds": [0, 1], **fields})


def _study_refused(study, error_type, field, *words):
    from resweep.study.preflight import preflight_study

    with pytest.raises(error_type) as info:
        preflight_study(study, verify_images=False)
    err = info.value
    if field is not None:
        assert err.field == field, str(err)
    for word in words:
        assert str(word) in str(err), str(err)
    assert "\n" not in str(err)
    return err


def test_study_preflight_checks_each_variant_not_only_the_base(files, monkeypatch):
    from resweep.study.preflight import preflight_study, study_experiments

    monkeypatch.delenv("RESWEEP_VGG_WEIGHTS", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(files["root"] / "empty_torch_home"))
    fine = [{"label": "baseline"}, {"label": "warm", "overrides": {"model.init_from": str(files["good"])}}]
    study = _study(files["root"], variants=fine)
    assert [where for where, _ in study_experiments(study)] == ["variant 'baseline'", "variant 'warm'"]
    preflight_study(study, verify_images=False)  # the base and these variants are fine

    # a variant switching on a method whose feature-network weights are not on this machine
    spn = {"label": "spn", "overrides": {"methods.spn": {"enabled": True, "weight": 1e-4}}}
    _study_refused(_study(files["root"], variants=[*fine, spn]), ConfigError,
                   "methods.spn.feature_weights", "variant 'spn'", "RESWEEP_VGG_WEIGHTS")
    # a variant naming a pickle payload: refused, never run
    evil = {"label": "evil-init", "overrides": {"model.init_from": str(files["evil"])}}
    _study_refused(_study(files["root"], variants=[*fine, evil]), ConfigError,
                   "model.init_from", "variant 'evil-init'", files["evil"], "not a safe torch file")
    assert not files["marker"].exists()
    # a variant training on an empty folder
    (files["root"] / "empty").mkdir()
    empty = {"label": "own-data", "overrides": {"data.train": {"kind": "folder", "path": str(files["root"] / "empty")}}}
    _study_refused(_study(files["root"], variants=[*fine, empty]), DataError, None,
                   "variant 'own-data'", files["root"] / "empty")


def test_study_preflight_names_the_grid_point_and_the_optuna_value(files):
    missing = files["root"] / "missing.pt"
    grid = {"model.init_from": {"type": "grid", "values": [str(files["good"]), str(missing)]}}
    _study_refused(_study(files["root"], space=grid), ConfigError, "model.init_from",
                   f"trial model.init_from='{missing}'", "file not found")
    optuna = {"model.init_from": {"type": "choice", "values": [str(files["good"]), str(missing)]},
              "optim.lr": {"type": "loguniform", "low": 1e-4, "high": 1e-3}}
    study = _study(files["root"], space=optuna, search={"algorithm": "optuna_tpe", "num_samples": 2})
    _study_refused(study, ConfigError, "model.init_from", f"space.model.init_from = '{missing}'", "file not found")


def test_resweep_run_refuses_a_bad_variant_in_one_line_before_ray(files, tmp_path, capsys, monkeypatch):
    import ray

    monkeypatch.delenv("RESWEEP_VGG_WEIGHTS", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(files["root"] / "empty_torch_home"))
    ray_was_up = ray.is_initialized()
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({
        "name": "pre", "base": tiny_config_dict(),
        "variants": [{"label": "baseline"}, {"label": "spn", "overrides": {"methods.spn.enabled": True}}],
    }))
    code = main(["run", str(path), "--dir", str(tmp_path / "study")])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("resweep: error:"), err
    assert "variant 'spn'" in err and "methods.spn.feature_weights" in err
    assert not (tmp_path / "study").exists()  # nothing written, no trial started
    assert ray.is_initialized() == ray_was_up  # Ray was not started for it


def test_video_study_config_passes_and_a_clip_with_a_gap_is_refused(tmp_path):
    """Video evaluation sets are clip folders: preflight reads them as clips, not images."""
    from resweep.errors import DataError
    from tests.test_video_data import video_config, write_clip

    clips = tmp_path / "clips"
    write_clip(clips / "a", 6)
    cfg = ExperimentConfig.from_dict(video_config(**{"eval.sets": [{"kind": "video_folder", "path": str(clips)}]}))
    preflight(cfg)
    write_clip(clips / "b", 6, skip=(3,))
    with pytest.raises(DataError, match="0003"):
        preflight(cfg)


def test_resweep_resume_runs_the_preflight_before_ray(tmp_path, capsys):
    """The data of a stopped study moved away: `resweep resume` names the field and the folder
    in one line, before Ray starts, and leaves the study folder as it was."""
    import ray

    ray_was_up = ray.is_initialized()
    data = tmp_path / "photos"
    data.mkdir()
    study_dir = tmp_path / "study"
    study_dir.mkdir()
    base = tiny_config_dict(**{"data.train": {"kind": "folder", "path": str(data)}})
    from resweep.study.layout import STUDY_FILE

    (study_dir / STUDY_FILE).write_text(yaml.safe_dump({"name": "moved", "base": base}))
    data.rmdir()
    before = sorted(p.name for p in study_dir.iterdir())
    code = main(["resume", str(study_dir)])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("resweep: error:"), err
    assert "data.train" in err and str(data) in err
    assert sorted(p.name for p in study_dir.iterdir()) == before
    assert ray.is_initialized() == ray_was_up
