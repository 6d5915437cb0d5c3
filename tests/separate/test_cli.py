"""``sepcluster separate`` from the command line: the field's habits, and bad options caught up front.

Every probe case ends in one line naming the option or path, exit code 2, before Ray starts and
before anything is written.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sepcluster.cli import main

from .conftest import synth, write


@pytest.fixture()
def one_track(tmp_path) -> str:
    return write(tmp_path / "in" / "a.wav", synth(1.0, 8000, seed=1), 8000)


@pytest.mark.parametrize("args, option", [
    (["--chunk-seconds", "2"], "overlap-seconds"),
    (["--overlap-seconds", "-1"], "overlap-seconds"),
    (["--gpus-per-actor", "1.5"], "gpus-per-actor"),
])
def test_bad_chunking_options_exit_2_naming_the_option(args, option, one_track, tmp_path, sepcluster_home, capsys):
    assert main(["separate", "--oracle", "irm", one_track, "-o", str(tmp_path / "out"), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sepcluster: error: ") and option in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_out_under_a_regular_file_fails_before_any_work(one_track, tmp_path, sepcluster_home, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["separate", "--oracle", "irm", one_track, "-o", str(blocker / "out")]) == 2
    err = capsys.readouterr().err
    assert str(blocker) in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_out_that_cannot_be_created_is_a_clear_error(one_track, sepcluster_home, capsys):
    assert main(["separate", "--oracle", "irm", one_track, "-o", "/proc/x/out"]) == 2
    err = capsys.readouterr().err
    assert "/proc/x" in err and "Traceback" not in err


def test_inputs_are_required_and_positional(tmp_path, sepcluster_home, capsys):
    assert main(["separate", "--oracle", "irm", "-o", str(tmp_path / "o")]) == 2
    assert "INPUT" in capsys.readouterr().err
    assert main(["separate", "--oracle", "irm", str(tmp_path / "nope.wav")]) == 2
    assert "--out" in capsys.readouterr().err


def test_model_that_is_not_a_model_names_the_file(one_track, tmp_path, sepcluster_home, capsys):
    bogus = Path(tmp_path / "weights.bin")
    bogus.write_bytes(b"\x00" * 64)
    assert main(["separate", "-m", str(bogus), one_track, "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "weights.bin" in err and "expected" in err and not (tmp_path / "o").exists()


def test_credentials_inside_an_s3_uri_are_refused_and_never_printed(tmp_path, sepcluster_home, capsys):
    assert main(["separate", "--oracle", "irm", "--input", "s3://AKIAEXAMPLE:s3cr3tKey@bucket/in",
                 "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "s3cr3tKey" not in err and "AKIAEXAMPLE" not in err
    assert "credentials inside an S3 URI" in err and "s3://***@bucket/in" in err


def test_a_run_prints_the_summary_without_ray_core_lines(small_bundle, tmp_path, sepcluster_home):
    """A plain run's stderr holds the job's own lines, not Ray's C++ core notices: Ray Data's actor pool
    makes the driver's core print an ERROR line about Ray Data's own constructor arguments on every
    run (ray-project/ray#57733), which sepcluster drops (``--verbose`` shows it)."""
    import os
    import re
    import subprocess
    import sys

    track = write(tmp_path / "in" / "a.wav", synth(2.0, 44100, seed=3), 44100)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    done = subprocess.run([sys.executable, "-m", "sepcluster", "separate", track, "-m", small_bundle,
                           "-o", str(tmp_path / "out"), "--no-progress"], capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "1 separated" in done.stdout + done.stderr
    core = [line for line in done.stderr.splitlines() if re.match(r"^\[\d{4}-\d\d-\d\d [\d:,]+ [EWIF] \d+ \d+\]", line)]
    assert core == [], core
