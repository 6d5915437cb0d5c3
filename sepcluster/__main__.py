"""``python -m sepcluster ...``: the same as the ``sepcluster`` command."""

from sepcluster.cli import run

if __name__ == "__main__":
    run()
