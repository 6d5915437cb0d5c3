"""The driver's fan-out of training units (:mod:`sepcluster.train.fanout`): threads, slots, errors."""

from __future__ import annotations

import threading
import time

import pytest

from sepcluster.train.fanout import Unit, run_units


class _Probe:
    """A unit's work that sleeps and records how many works ran at once and in which order they began."""

    def __init__(self, fail: tuple = ()):
        self.lock = threading.Lock()
        self.running = self.most = 0
        self.began: list = []
        self.fail = fail

    def __call__(self, unit: Unit) -> str:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
            self.began.append(unit.name)
        time.sleep(0.3)
        with self.lock:
            self.running -= 1
        if unit.name in self.fail:
            raise RuntimeError(f"{unit.name} broke")
        return unit.name.upper()


def _units(tmp_path, n: int = 4) -> list:
    return [Unit(f"t{i}", str(tmp_path / f"run-t{i}"), 3) for i in range(n)]


@pytest.mark.parametrize("at_once,most", [(None, 4), (2, 2), (1, 1), (9, 4)])
def test_units_run_at_most_at_once_and_all_return(tmp_path, at_once, most):
    probe = _Probe()
    out = run_units(_units(tmp_path), probe, poll=0.05, at_once=at_once)
    assert out == {"t0": "T0", "t1": "T1", "t2": "T2", "t3": "T3"}
    assert probe.most == most and sorted(probe.began) == ["t0", "t1", "t2", "t3"]


def test_a_failed_unit_frees_its_slot_and_its_error_comes_after_every_unit_ran(tmp_path):
    probe = _Probe(fail=("t0",))
    with pytest.raises(RuntimeError, match="t0 broke"):
        run_units(_units(tmp_path), probe, poll=0.05, at_once=1)
    assert sorted(probe.began) == ["t0", "t1", "t2", "t3"] and probe.most == 1
