"""CLI: help for every command, --config defaults, clear errors."""

import subprocess
import sys

import pytest

from sepcluster import cli


@pytest.mark.parametrize("command", sorted(cli.COMMANDS))
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main([command, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "--config" in out and len(out.splitlines()) > 4
    assert "--no-progress" in out and "examples:" in out and f"sepcluster {command} " in out


def test_version_and_python_dash_m():
    import sepcluster

    for cmd in ([sys.executable, "-m", "sepcluster", "--version"], [sys.executable, "-m", "sepcluster.cli", "--version"]):
        done = subprocess.run(cmd, capture_output=True, text=True)
        assert done.returncode == 0 and done.stdout.strip() == f"sepcluster {sepcluster.__version__}"


def test_top_level_help_imports_no_job():
    code = ("import sys; from sepcluster import cli\n"
            "try:\n    cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in sys.modules if m.split('.')[:2] in (['sepcluster', j] for j in "
            "('stems', 'generate', 'train', 'separate', 'evaluate', 'models'))))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip().splitlines()[-1] == "[]", done.stdout + done.stderr


def test_top_level_help_lists_jobs():
    out = subprocess.run([sys.executable, "-m", "sepcluster.cli", "--help"], capture_output=True, text=True).stdout
    for command in cli.COMMANDS:
        assert command in out


def test_config_file_unknown_key_is_an_error(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("num_mixturez: 3\n")
    assert cli.main(["generate", "--config", str(cfg)]) == 2
    assert "num_mixturez" in capsys.readouterr().err


def test_missing_config_file_is_an_error(tmp_path, capsys):
    assert cli.main(["generate", "--config", str(tmp_path / "none.yaml")]) == 2
    assert "file not found" in capsys.readouterr().err


def test_exit_now_runs_what_python_runs_at_exit(tmp_path):
    """The command skips only the interpreter's module teardown: non-daemon threads finish, atexit
    handlers run, buffered output is flushed, and the exit code is the job's."""
    code = (
        "import atexit, logging, sys, threading, time\n"
        "from pathlib import Path\n"
        "from sepcluster import cli\n"
        f"folder = Path({str(tmp_path)!r})\n"
        "atexit.register(lambda: (folder / 'atexit').write_text('ran'))\n"
        "def late():\n"
        "    time.sleep(0.5)\n"
        "    (folder / 'thread').write_text('done')\n"
        "threading.Thread(target=late).start()\n"
        "logging.basicConfig(filename=str(folder / 'log.txt'), level=logging.INFO)\n"
        "logging.getLogger('x').info('logged line')\n"
        "sys.stdout.write('no newline, buffered')\n"
        "cli.exit_now(3)\n"
        "print('never reached')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 3, done.stderr
    assert done.stdout == "no newline, buffered"
    assert (tmp_path / "thread").read_text() == "done" and (tmp_path / "atexit").read_text() == "ran"
    assert "logged line" in (tmp_path / "log.txt").read_text()
