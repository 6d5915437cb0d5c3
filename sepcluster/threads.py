"""Running a few calls at once in threads (each call's result kept, the first error re-raised)."""

from __future__ import annotations

import threading
from typing import Callable, Optional


def run_in_threads(calls: list[Callable], name: Optional[str] = None) -> list:
    """Run ``calls`` at once, one thread each (named ``<name>-<i>``), wait for all of them and return
    their results in order; if any raised, re-raise the first error (after every thread ended)."""
    results: list = [None] * len(calls)
    errors: list = []

    def work(i: int) -> None:
        try:
            results[i] = calls[i]()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,), name=f"{name}-{i}" if name else None)
               for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results
