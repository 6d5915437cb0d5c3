"""The Ray session policy (:mod:`sepcluster.raycluster`) on a real local Ray."""

from __future__ import annotations

import os

import pytest

from sepcluster import raycluster
from tests.conftest import fake_autoscaler


@pytest.fixture
def no_ray(monkeypatch, tmp_path):
    import ray

    raycluster.shutdown()
    assert not ray.is_initialized()
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("SEPCLUSTER_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    yield
    raycluster.shutdown()


def _alive(pids: list) -> list:
    """The processes of ``pids`` still running (not gone, not zombies), from /proc."""
    alive = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.append(pid)
    return alive


def test_a_new_local_ray_serves_the_forwarded_settings_and_stops_in_the_background(no_ray):
    """Workers of a local Ray started by a session see the settings the jobs forward (inherited: no
    runtime env); leaving the session stops that Ray in a thread, and the next use waits for it."""
    import ray

    @ray.remote
    def settings() -> dict:
        return {k: os.environ.get(k) for k in ("SEPCLUSTER_HOME", "MLFLOW_TRACKING_URI", "RAY_USAGE_STATS_ENABLED")}

    with raycluster.session(num_cpus=1):
        seen = ray.get(settings.remote())
        node = ray._private.worker._global_node
        pids = [info.process.pid for infos in node.all_processes.values() for info in infos]
    assert seen["SEPCLUSTER_HOME"] == os.environ["SEPCLUSTER_HOME"]
    assert seen["MLFLOW_TRACKING_URI"] == os.environ["MLFLOW_TRACKING_URI"]  # the default the driver set
    assert seen["RAY_USAGE_STATS_ENABLED"] == "0"
    assert pids
    with raycluster.session(num_cpus=1):  # waits for the first Ray to stop, then starts its own
        assert ray.cluster_resources()["CPU"] == 1.0
        assert not _alive(pids)
    raycluster.shutdown()  # waits for the second stop
    assert not ray.is_initialized()


def test_autoscaling_max_is_what_the_autoscaler_may_bring_up(no_ray):
    raycluster.init(num_cpus=2)
    assert raycluster.autoscaling_max() is None  # a local Ray: fixed size
    fake_autoscaler([({"CPU": 8, "GPU": 1}, 4), ({"CPU": 16}, 2)])
    assert raycluster.autoscaling_max() == {"CPU": 64.0, "GPU": 4.0}
    fake_autoscaler(None)
    assert raycluster.autoscaling_max() is None


def test_declared_max_resources_win_and_bad_ones_name_the_variable(no_ray, monkeypatch):
    from sepcluster.errors import ConfigError

    monkeypatch.setenv("SEPCLUSTER_MAX_RESOURCES", "CPU=288, GPU=4")
    assert raycluster.autoscaling_max() == {"CPU": 288.0, "GPU": 4.0}  # no Ray needed
    monkeypatch.setenv("SEPCLUSTER_MAX_RESOURCES", "GPU=four")
    with pytest.raises(ConfigError, match="GPU=four") as err:
        raycluster.autoscaling_max()
    assert err.value.field == "SEPCLUSTER_MAX_RESOURCES"


NOTICE = ("[2026-12-07 23:55:39,318 E 3239 3239] core_worker.cc:2465: Actor with class name: "
          "'MapWorker(MapBatches(SeparateWorker))' and ID: 'f8824f09e7a7131ec2918ede01000000' has constructor "
          "arguments in the object store and max_restarts > 0. If the arguments in the object store go out of "
          "scope or are lost, the actor restart will fail. See https://github.com/ray-project/ray/issues/53727 "
          "for more details.\n").encode()


def test_without_lines_drops_rays_notices_and_passes_the_rest_in_order(capfd):
    """What the process writes to fd 2 while a session runs: Ray's notices go (the actor-arguments
    line, also right after a progress bar's unfinished line, and the raylet's worker start-up
    warning), any other core line and Python's own lines stay, in order, and a progress bar's
    unfinished line comes out at once, not when the session ends."""
    import sys
    import time

    other = b"[2026-12-07 23:55:40,001 E 3239 3239] core_worker.cc:100: the raylet is gone\n"
    startups = (b"\x1b[33m(raylet)\x1b[0m WARNING: 8 PYTHON worker processes have been started on node: e1234f34 with "
                b"address: 192.0.2.2, which is 4x the maximum expected startup concurrency (2). This could be ...\n")
    with raycluster.without_lines(raycluster.RAY_NOTICES):
        os.write(2, b"\rseparate:   0%|          | 0/2 [00:00<?, ?track/s]")
        seen = ""
        for _ in range(250):
            seen += capfd.readouterr().err
            if seen:
                break
            time.sleep(0.02)
        assert seen == "\rseparate:   0%|          | 0/2 [00:00<?, ?track/s]"
        os.write(2, NOTICE)
        sys.stderr.write("separate: a warning of the job\n")
        sys.stderr.flush()
        os.write(2, other + NOTICE)
        os.write(2, startups)
        os.write(2, b"\rseparate: 100%|##########| 2/2 [00:03<00:00]")
    assert capfd.readouterr().err == ("separate: a warning of the job\n" + other.decode()
                                      + "\rseparate: 100%|##########| 2/2 [00:03<00:00]")
    os.write(2, NOTICE)  # after the session, fd 2 is the terminal's again
    assert capfd.readouterr().err == NOTICE.decode()


def test_without_lines_loses_nothing_when_the_process_dies():
    """The filter is a process of its own: the last lines of a driver that aborts still come out."""
    import subprocess
    import sys

    code = ("import os\nfrom sepcluster import raycluster\n"
            "with raycluster.without_lines(raycluster.RAY_NOTICES):\n"
            "    os.write(2, b'F check failed: the reason\\n')\n"
            "    os.abort()\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert done.returncode != 0 and done.stderr.endswith(b"F check failed: the reason\n"), done.stderr


def test_sessions_drop_the_raylets_start_up_warning_from_stdout(capfd):
    """Ray's error channel prints the raylet's worker start-up warning (concurrent trainers) to stdout."""
    startups = (b"\x1b[33m(raylet)\x1b[0m WARNING: 8 PYTHON worker processes have been started on node: e1234f34 with "
                b"address: 192.0.2.2, which is 4x the maximum expected startup concurrency (2). [repeated 4x across "
                b"cluster]\n")
    with raycluster.without_lines(raycluster.RAY_NOTICES, 1):
        os.write(1, b"train: the job's own line\n" + startups)
    assert capfd.readouterr().out == "train: the job's own line\n"
