"""The relay that carries what trials produce to the driver (resweep.trainables.relay), and
the study option that keeps trials on chosen nodes (resources.custom_resources)."""

from __future__ import annotations

import pytest

from resweep.trainables import relay as relay_module
from resweep.trainables.relay import RelayActor, write_relayed


def test_the_relay_keeps_what_senders_push_until_drained_and_bounds_what_waits(tmp_path, monkeypatch):
    relay = RelayActor()
    relay.push("t1", text="a\n")
    relay.push("t1", text="b\n", error={"type": "ValueError", "message": "x"})
    relay.push("t2", files={"t2/set/x.png": b"png"}, records=[{"iteration": 1}])
    assert relay.known(["t2/set/x.png", "_gt/set/x.png"]) == ["t2/set/x.png"]
    batch = relay.drain()
    assert batch["t1"]["text"] == "a\nb\n" and batch["t1"]["error"] == {"type": "ValueError", "message": "x"}
    assert batch["t2"]["files"] == {"t2/set/x.png": b"png"} and batch["t2"]["records"] == [{"iteration": 1}]
    assert relay.drain() == {}  # each thing once

    # a driver that stops draining: lines past the bound are counted, not kept
    monkeypatch.setattr(relay_module, "MAX_PENDING_TEXT", 10)
    for _ in range(5):
        relay.push("t1", text="0123\n")
    text = relay.drain()["t1"]["text"]
    assert text == "0123\n0123\n[relay: 3 log line(s) dropped: the driver fell behind]\n"

    # the driver writes it into its own folder; a name that would leave the images folder is not written
    write_relayed({"text": "line\n", "error": {"type": "E"}, "files": {"t/a.png": b"1", "/etc/x.png": b"2",
                                                                       "t/../../y.png": b"3"}},
                  log_path=tmp_path / "trials" / "t" / "log.txt", error_path=tmp_path / "trials" / "t" / "error.json",
                  image_root=tmp_path / "images")
    assert (tmp_path / "trials" / "t" / "log.txt").read_text() == "line\n"
    assert (tmp_path / "images" / "t" / "a.png").read_bytes() == b"1"
    assert sorted(p.name for p in tmp_path.rglob("*.png")) == ["a.png"]


@pytest.mark.ray
def test_a_sender_delivers_lines_error_and_images_before_it_closes(ray_local, tmp_path):
    from resweep.trainables.relay import drain, relay_sender, start_relay, stop_relay

    actor = start_relay(str(tmp_path))
    try:
        (tmp_path / "out" / "t1" / "set").mkdir(parents=True)
        (tmp_path / "out" / "t1" / "set" / "x.png").write_bytes(b"x")
        (tmp_path / "out" / "_gt" / "set").mkdir(parents=True)
        (tmp_path / "out" / "_gt" / "set" / "x.png").write_bytes(b"gt")
        with relay_sender(relay_module.relay_name(str(tmp_path)), "t1") as sender:
            for i in range(100):
                sender.write(f"line {i}\n")
            sender.error({"type": "ValueError", "message": "boom"})
            assert sender.send_files(tmp_path / "out") == 2
            sender.record({"iteration": 4})
        batch = drain(actor)["t1"]  # close() returned: everything is there
        assert batch["text"] == "".join(f"line {i}\n" for i in range(100))
        assert batch["error"]["message"] == "boom" and batch["records"] == [{"iteration": 4}]
        assert set(batch["files"]) == {"t1/set/x.png", "_gt/set/x.png"}
        with relay_sender(relay_module.relay_name(str(tmp_path)), "t2") as sender:
            assert sender.send_files(tmp_path / "out") == 0  # the same names: already received
    finally:
        stop_relay(actor)
    with pytest.warns(UserWarning, match="no relay actor"), relay_sender("relay-nobody", "t3") as sender:
        assert sender is None  # no driver relay: the caller writes its files itself


def test_custom_resources_are_validated_and_reach_the_trials():
    from resweep.errors import ConfigError
    from resweep.study.spec import study_from_dict

    from conftest import tiny_config_dict

    def study(resources):
        return study_from_dict({"name": "s", "base": tiny_config_dict(), "resources": resources,
                                "objectives": [{"metric": "eval.demo-eval.psnr_y", "mode": "max"}]})

    assert study({"custom_resources": {"trial_node": 1}}).resources.custom_resources == {"trial_node": 1.0}
    for bad, says in (({"CPU": 1}, "Ray's own resource"), ({"trial_node": 0}, "must be > 0")):
        with pytest.raises((ConfigError, ValueError), match=says):
            study({"custom_resources": bad})
