"""Several trainers at once from one driver: one thread per training unit, one progress bar each.

A *unit* is what one Ray Train ``TorchTrainer`` trains: one target's model (umx, unet), or one
multi-source model of all the targets. :func:`run_units` starts every unit's work in a thread of its
own at once; each thread's ``TorchTrainer.fit()`` asks Ray for its own DDP worker group (a placement
group of ``num_workers`` bundles). Ray Train V2 runs one controller actor per ``fit()`` (no CPU of its
own), so the fits are independent: with enough free resources all worker groups run at the same
time; otherwise the placement groups of the others wait (an autoscaler sees them pending), and Ray
Train's controller keeps retrying (``WorkerGroupStartupTimeoutError`` is retried without limit), so
those units queue and start as soon as an earlier unit's workers are gone. ``at_once`` caps the
units at a time (an operator's choice on a shared cluster): the other threads wait for a running
unit to end before they call ``fit()``. (On the 2-node, 1-CPU-each bench cluster, 4 targets took
the same time either way: 174 s with 2 at a time from the driver, 173 s all queued by Ray, median
of 2 alternating runs, bench/train.py queueing.) The calling (driver) thread polls each unit's
newest checkpoint ``meta.json`` every 2 s and shows one bar per unit (epochs done, last losses).

A unit that fails does not stop the others: every unit runs to its end (each one's checkpoints are
kept), then the first error, in unit order, is raised.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass
from typing import Any, Callable, Optional


@dataclass(frozen=True)
class Unit:
    """A training unit: its ``name`` (a target, or the multi-source model's), the Ray run folder it
    checkpoints into (``run_uri``) and the epochs it trains in all."""

    name: str
    run_uri: str
    epochs: int


def run_units(units: list, work: Callable[[Unit], Any], poll: float = 2.0, at_once: Optional[int] = None) -> dict:
    """``work(unit)`` for every unit, concurrently, at most ``at_once`` at a time (``None``: all; see
    the module docstring); returns ``{name: result}``.

    The calling thread shows the progress bars until every thread has finished, then raises the
    first unit's error if any failed.
    """
    outcome: dict = {}
    errors: dict = {}
    slots = threading.BoundedSemaphore(at_once) if at_once else contextlib.nullcontext()

    def run(unit: Unit) -> None:
        try:
            with slots:
                outcome[unit.name] = work(unit)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the driver's thread
            errors[unit.name] = exc

    threads = [threading.Thread(target=run, args=(u,), name=f"train-{u.name}", daemon=True) for u in units]
    bars = _bars(units)
    for thread in threads:
        thread.start()
    try:
        while any(t.is_alive() for t in threads):
            for thread in threads:
                thread.join(timeout=poll / max(len(threads), 1))
            _refresh(units, bars)
        _refresh(units, bars)
    finally:
        for bar in bars.values():
            bar.close()
    for unit in units:
        if unit.name in errors:
            raise errors[unit.name]
    return {u.name: outcome[u.name] for u in units}


def _bars(units: list) -> dict:
    from .. import raycluster

    return {u.name: raycluster.progress(total=u.epochs, desc=f"train {u.name}", unit="epoch") for u in units}


def _refresh(units: list, bars: dict) -> None:
    from .checkpoint import latest_epoch_meta

    for unit in units:
        show_epoch(bars[unit.name], latest_epoch_meta(unit.run_uri))


def show_epoch(bar, meta: Optional[dict]) -> None:
    """Move ``bar`` to the epoch of a checkpoint's ``meta`` and show its last losses."""
    if not meta:
        return
    epoch = int(meta.get("epoch") or 0)
    if epoch > bar.n:
        bar.update(epoch - bar.n)
    metrics = meta.get("metrics") or {}
    shown = {k: f"{float(metrics[k]):.4g}" for k in ("train_loss", "valid_loss", "valid_sisdr") if k in metrics}
    if shown:
        bar.set_postfix(shown, refresh=False)


__all__ = ["Unit", "run_units", "show_epoch"]
