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
