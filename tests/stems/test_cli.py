"""``sepcluster stems prepare|synth`` through the real command line entry point."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from sepcluster.cli import main
from sepcluster.datasets import MUSDB_SOURCES as LABELS
from sepcluster.datasets.library import validate_library

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_synth(tmp_path, capsys):
    out = tmp_path / "lib"
    code = main(["stems", "synth", "--out", str(out), "--songs", "2", "--seconds", "1", "--seed", "3",
                 "--sample-rate", "8000", "--channels", "1"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["songs"] == 2 and summary["out"] == str(out)
    assert validate_library(str(out), LABELS)["vocals"] == ["song000.wav", "song001.wav"]
    meta = json.loads((out / "library.json").read_text())
    assert (meta["seed"], meta["sample_rate"], meta["channels"]) == (3, 8000, 1)


def test_synth_from_config(tmp_path):
    out = tmp_path / "lib"
    cfg = tmp_path / "stems.yaml"
    cfg.write_text(f"out: {out}\nsongs: 1\nseconds: 0.5\nseed: 9\nsample-rate: 8000\n")
    assert main(["stems", "synth", "--config", str(cfg), "--channels", "1"]) == 0
    meta = json.loads((out / "library.json").read_text())
    assert (meta["songs"], meta["seed"], meta["sample_rate"], meta["channels"]) == (1, 9, 8000, 1)


def test_prepare_musdb_hq(musdb_sample, tmp_path):
    out = tmp_path / "lib"
    assert main(["stems", "prepare", "--musdb", str(musdb_sample), "--is-wav", "--subset", "train",
                 "--out", str(out)]) == 0
    assert validate_library(str(out), LABELS)["bass"] == ["Music Delta - 80s Rock.wav"]


def test_prepare_folders_with_labels(musdb_sample, tmp_path):
    out = tmp_path / "lib"
    assert main(["stems", "prepare", "--folders", str(musdb_sample / "train"), "--labels", "vocals,drums",
                 "--out", str(out)]) == 0
    assert sorted(os.listdir(out / "foreground")) == ["drums", "vocals"]


@pytest.mark.parametrize("argv, message", [
    (["stems", "synth", "--out", "X", "--seconds", "1"], "--songs"),
    (["stems", "synth", "--songs", "1", "--seconds", "1"], "--out"),
    (["stems", "synth", "--out", "X", "--songs", "0", "--seconds", "1"], "songs"),
    (["stems", "prepare", "--out", "X"], "--musdb/--folders"),
    (["stems", "prepare", "--musdb", "A", "--folders", "B", "--out", "X"], "--musdb/--folders"),
    (["stems", "prepare", "--musdb", "NOWHERE", "--out", "X"], "NOWHERE"),
    (["stems", "prepare", "--folders", "NOWHERE", "--out", "X"], "NOWHERE"),
])
def test_errors_exit_2_with_a_message(tmp_path, capsys, argv, message):
    argv = [str(tmp_path / a) if a in ("X", "A", "B", "NOWHERE") else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("sepcluster: error:") and message in err
    assert not (tmp_path / "X").exists()


def test_console_script_help():
    proc = subprocess.run([sys.executable, "-m", "sepcluster.cli", "stems", "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0
    for word in ("prepare", "synth", "--musdb", "--folders", "--is-wav", "--songs", "--seconds", "--seed"):
        assert word in proc.stdout
