"""The generate job's Ray actors: :class:`MixerActor` renders shards, :class:`ShardPool` hands them out.

An actor indexes the stem library once, keeps a scoped source cache
(:class:`~sepcluster.generate.mixing.MixtureRenderer`) and renders its shard seed by seed,
streaming one row group per mixture into a temporary file that becomes the shard atomically.
The pool gives shards only to actors that have started, replaces actors that die (their
in-flight shard goes back to the queue) and reports progress; shards already written are never
redone.
"""

from __future__ import annotations

import logging
import os
import resource
import time
from collections import deque

from .. import storage
from ..datasets import mixtures as layout
from ..datasets.library import index_library
from ..errors import DataError, SepclusterError
from ..memory import keep_freed_memory
from . import dataset as ds
from .mixing import MixtureRenderer
from .recipe import Recipe

log = logging.getLogger(__name__)

PROGRESS_INTERVAL_S = 0.5  # an actor reports mixtures done at most this often (fewer messages to the driver)
ACTOR_START_TIMEOUT_S = float(os.environ.get("SEPCLUSTER_ACTOR_START_TIMEOUT", "600"))
ACTOR_START_GRACE_S = float(os.environ.get("SEPCLUSTER_ACTOR_START_GRACE", "60"))


class MixerActor:
    """A Ray actor that renders shards. Constructed once per process; holds the library index."""

    def __init__(self, recipe_json: str, recipe_yaml: str | None, stems_dir: str, out: str, audio_format: str,
                 cache_mb: int):
        import json

        from .recipe import parse_recipe

        logging.getLogger("sox").setLevel(logging.ERROR)
        # Scaper allocates and frees several mixture-length float64 buffers per event; in a Ray
        # worker glibc serves each with a fresh mmap (5x the page faults of a plain process)
        keep_freed_memory()
        self.recipe = parse_recipe(json.loads(recipe_json), source_yaml=recipe_yaml)
        self.library = index_library(stems_dir, self.recipe.labels)
        self.out = out
        self.audio_format = audio_format
        # Decoded sources (and, without pitch/time, their channel conversion) are kept only when
        # the whole library fits the budget; file info is always cached.
        self.renderer = MixtureRenderer(self.recipe, self.library, max(0, int(cache_mb)) << 20)
        # warm up (imports, sox, filters) and fail here, at start, if this node cannot render
        self.renderer.render(0)
        self.renderer.preload()  # decode once now, not during the shards

    def pid(self) -> int:
        return os.getpid()

    def run_shard(self, first: int, last: int):
        """Render seeds ``first..last`` into ``shard-<first>-<last>.parquet``.

        A streaming generator: yields the number of mixtures rendered since its last report (at
        most every ``PROGRESS_INTERVAL_S``), then a summary dict (after the shard is committed).
        An existing shard is left alone (summary ``skipped: True``).
        """
        uri = storage.join(self.out, layout.shard_name(first, last))
        started = time.perf_counter()
        cpu_started = time.process_time()
        if storage.exists(uri):
            yield {"first": first, "last": last, "skipped": True, "count": 0, "coherent": 0,
                   "seconds": 0.0, "cpu_seconds": 0.0, "render_seconds": 0.0, "store_seconds": 0.0,
                   "pid": os.getpid(), "peak_rss_mb": _peak_rss_mb()}
            return
        coherent = 0
        render = 0.0
        unreported, reported_at = 0, started
        with ds.ShardWriter(uri, self.recipe, self.audio_format, first, last) as writer:
            for seed in range(first, last + 1):
                t = time.perf_counter()
                try:
                    result = self.renderer.render(seed)
                except SepclusterError:
                    raise
                except Exception as exc:
                    raise DataError(f"seed {seed}: Scaper failed to render the mixture: {exc}") from exc
                render += time.perf_counter() - t
                writer.write(result)
                coherent += int(result.coherent)
                unreported += 1
                if time.perf_counter() - reported_at >= PROGRESS_INTERVAL_S:
                    yield unreported
                    unreported, reported_at = 0, time.perf_counter()
            if unreported:
                yield unreported
        yield {"first": first, "last": last, "skipped": False, "count": last - first + 1, "coherent": coherent,
               "seconds": time.perf_counter() - started, "cpu_seconds": time.process_time() - cpu_started,
               "render_seconds": render, "store_seconds": time.perf_counter() - started - render,
               "pid": os.getpid(), "peak_rss_mb": _peak_rss_mb()}


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return storage.redact(" ".join(t.strip() for t in text[:3]))[:400]


class ShardPool:
    """Hand shards to actors until every shard is committed; replace actors that die.

    Shards only ever go to actors that have started (placed on a node, library indexed). An actor
    that cannot be placed yet (more actors asked for than free CPUs, or a replacement for one lost
    with its node) waits in ``starting`` and joins the pool when a CPU frees up or a node joins;
    meanwhile the started actors take every shard, including those given back by dead actors.
    Work starts when every first actor is up, or ``ACTOR_START_GRACE_S`` after the first one is
    (so that a cold node's actor is not left without work by a short job, and a cluster with
    fewer free CPUs than actors still gets going). ``summary`` (a ``GenerateSummary``) is
    updated in place.
    """

    def __init__(self, recipe: Recipe, stems_dir: str, out: str, audio_format: str, cache_mb: int, summary,
                 show_progress: bool, already: int):
        import ray

        self.remote_cls = ray.remote(MixerActor)
        self.args = (recipe.to_json(), recipe.source_yaml, stems_dir, out, audio_format, cache_mb)
        self.out = out
        self.summary = summary
        self.replacements_left = 3 + 2 * summary.num_actors
        self.show_progress, self.already = show_progress, already
        self.starting: dict = {}   # ready ref (actor.pid) -> actor, until the actor is up
        self.idle: deque = deque()
        self.queue: deque = deque()
        self.inflight: dict = {}   # generator -> [actor, (first, last), mixtures rendered so far]
        self.bar = None
        self.t_ready = None        # the first actor is up

    # ------------------------------------------------------------------ actors
    def _start_actor(self) -> None:
        actor = self.remote_cls.options(num_cpus=1, max_restarts=0, max_task_retries=0).remote(*self.args)
        self.starting[actor.pid.remote()] = actor

    def _replace(self) -> None:
        if self.replacements_left > 0:
            self.replacements_left -= 1
            self._start_actor()  # joins the pool once Ray can place it

    @staticmethod
    def _kill(actor) -> None:
        import ray

        try:
            ray.kill(actor, no_restart=True)
        except Exception:  # noqa: BLE001  (already gone)
            pass

    # ------------------------------------------------------------------ the loop
    def run(self, todo: list) -> None:
        """Make every shard of ``todo`` (``(first, last)`` seed ranges)."""
        from .. import raycluster

        t_start = time.perf_counter()
        t_work = t_start
        for _ in range(self.summary.num_actors):
            self._start_actor()
        self.queue.extend(todo)
        if self.show_progress:
            self.bar = raycluster.progress(total=self.summary.num_mixtures, desc="generate", unit="mix",
                                           initial=self.already)
        try:
            warming_up = True
            while self.queue or self.inflight:
                if warming_up:
                    warming_up = bool(self.starting) and (
                        self.t_ready is None or time.perf_counter() - self.t_ready < ACTOR_START_GRACE_S)
                    if not warming_up:
                        t_work = time.perf_counter()
                        self.summary.startup_seconds = t_work - t_start
                if not warming_up:
                    self._hand_out()
                self._check_alive(t_start)
                self._wait_once()
            self.summary.seconds = time.perf_counter() - t_work
        finally:
            if self.bar is not None:
                self.bar.close()
            for actor in list(self.idle) + [v[0] for v in self.inflight.values()] + list(self.starting.values()):
                self._kill(actor)

    def _hand_out(self) -> None:
        while self.queue and self.idle:
            actor = self.idle.popleft()
            shard = self.queue.popleft()
            self.inflight[actor.run_shard.remote(*shard)] = [actor, shard, 0]

    def _check_alive(self, t_start: float) -> None:
        if not self.inflight and not self.starting and not self.idle:
            raise DataError(f"generate: no actor left to make {len(self.queue)} shard(s) of "
                            f"{storage.redact(self.out)}")
        if not self.inflight and time.perf_counter() - t_start > ACTOR_START_TIMEOUT_S and self.t_ready is None:
            raise DataError(f"generate: no actor could start within {ACTOR_START_TIMEOUT_S:.0f} s "
                            f"(does the cluster have a free CPU? set SEPCLUSTER_ACTOR_START_TIMEOUT to wait longer)")

    def _wait_once(self) -> None:
        import ray

        ready, _ = ray.wait(list(self.inflight) + list(self.starting), num_returns=1, timeout=2.0)
        for ref in ready:
            if ref in self.starting:
                self._actor_started(ref)
            else:
                self._shard_progress(ref)

    def _actor_started(self, ref) -> None:
        import ray
        from ray.exceptions import RayActorError

        actor = self.starting.pop(ref)
        try:
            ray.get(ref)
        except RayActorError as exc:
            if getattr(exc, "actor_init_failed", False):
                raise DataError(f"generate: the actor could not start: {_short(exc)}") from None
            log.warning("generate: an actor died while starting (%s)", _short(exc))
            self._kill(actor)
            self.summary.actor_failures += 1
            self._replace()
            return
        if self.t_ready is None:
            self.t_ready = time.perf_counter()
        self.idle.append(actor)

    def _shard_progress(self, gen) -> None:
        import ray
        from ray.exceptions import RayActorError, RayTaskError

        actor, shard, partial = self.inflight[gen]
        try:
            value = ray.get(next(gen))
        except StopIteration:
            del self.inflight[gen]
            self.idle.append(actor)
            return
        except RayActorError as exc:
            del self.inflight[gen]
            if getattr(exc, "actor_init_failed", False):
                raise DataError(f"generate: the actor could not start: {_short(exc)}") from None
            self.summary.actor_failures += 1
            self.queue.appendleft(shard)
            if self.bar is not None and partial:
                self.bar.update(-partial)
            log.warning("generate: actor died during shard %d-%d (%s); the shard goes back to the queue",
                        shard[0], shard[1], _short(exc))
            self._kill(actor)
            self._replace()
            return
        except RayTaskError as exc:
            cause = exc.cause if isinstance(getattr(exc, "cause", None), BaseException) else None
            if isinstance(cause, SepclusterError):
                raise cause from None
            raise DataError(f"generate: shard {shard[0]}-{shard[1]} failed: {_short(exc)}") from None
        if isinstance(value, dict):
            del self.inflight[gen]
            self.idle.append(actor)
            self._shard_done(shard, value)
        else:
            self.inflight[gen][2] += int(value)
            if self.bar is not None:
                self.bar.update(int(value))

    def _shard_done(self, shard: tuple, value: dict) -> None:
        summary = self.summary
        if value["skipped"]:
            summary.shards_skipped += 1
            summary.skipped += shard[1] - shard[0] + 1
            if self.bar is not None:
                self.bar.update(shard[1] - shard[0] + 1)
        else:
            summary.shards_written += 1
            summary.generated += value["count"]
            summary.coherent += value["coherent"]
            summary.cpu_seconds += value["cpu_seconds"]
            summary.render_seconds += value["render_seconds"]
            summary.store_seconds += value["store_seconds"]
        summary.peak_rss_mb[str(value["pid"])] = round(value["peak_rss_mb"], 1)
