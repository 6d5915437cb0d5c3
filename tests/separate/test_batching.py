"""Batching across tracks (:mod:`sepcluster.separate.batching`): tracks separated at once, one thread
each, share the model's calls, and each track's stems equal its separation alone.

Stated tolerance: ``TOL_BATCHED`` (1e-5; other batch compositions change results by float rounding
only, measured <= 1e-7).
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from sepcluster.models import load_bundle
from sepcluster.separate.batching import SharedBatches
from sepcluster.separate.engine import separate_track
from sepcluster.separate.estimators import make_estimator
from sepcluster.threads import run_in_threads

from .conftest import synth
from .waveform_cases import SR, TOL_BATCHED, one_thread, small_htdemucs  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")


def _at_once(estimator, tracks: list, batch_size: int, **kw) -> tuple[list, SharedBatches]:
    """Each track separated in its own thread through one SharedBatches."""
    shared = SharedBatches(estimator, batch_size)
    all_in = threading.Barrier(len(tracks))  # every track takes part before any asks for the model

    def work(x):
        with shared.track():
            all_in.wait()
            return separate_track(shared, x, SR, **kw)

    return run_in_threads([lambda x=x: work(x) for x in tracks]), shared


def _alone(estimator, tracks: list, batch_size: int, **kw) -> tuple[list, int]:
    """Each track on its own (one track at a time); the number of model calls it took."""
    out, calls = [], 0
    for x in tracks:
        shared = SharedBatches(estimator, batch_size)
        with shared.track():
            out.append(separate_track(shared, x, SR, **kw))
        calls += shared.calls
    return out, calls


def _max_diff(a: list, b: list) -> float:
    return max(float(np.abs(x[k] - y[k]).max()) for x, y in zip(a, b) for k in x)


def test_demucs_tracks_at_once_share_calls_and_equal_their_separation_alone(tmp_path):
    from sepcluster.models.demucs import load_demucs
    from sepcluster.separate.waveform_estimators import DemucsEstimator
    from tests.models.foreign_files import save_demucs

    model = load_demucs(save_demucs(small_htdemucs(), tmp_path / "ht.th"))
    est = DemucsEstimator(model, batch_size=1, workers=1)
    # 1, 1 and 2 chunks of the 7.8 s segment: alone, each track's chunks fill no batch of 4
    tracks = [synth(2.5, SR, seed=1), synth(5.0, SR, seed=2), synth(9.0, SR, seed=3)]
    alone, solo_calls = _alone(est, tracks, batch_size=4)
    together, shared = _at_once(est, tracks, batch_size=4)
    assert shared.chunks == 4 and solo_calls == 3
    assert shared.calls < solo_calls  # chunks of different tracks went through one call
    assert all(set(t) == set(model.sources) and t["vocals"].shape == x.shape for t, x in zip(together, tracks))
    assert _max_diff(together, alone) <= TOL_BATCHED
    assert max(float(np.abs(t["drums"]).max()) for t in together) > 0.05  # not negligible outputs


def test_spectrogram_tracks_at_once_equal_their_separation_alone(small_bundle):
    """An Open-Unmix bundle with the Wiener filter: equal-length chunks of three tracks in one call."""
    est = make_estimator(load_bundle(small_bundle), niter=1)
    tracks = [synth(6.0, SR, seed=s) for s in (4, 5, 6)]
    alone, solo_calls = _alone(est, tracks, batch_size=3)
    together, shared = _at_once(est, tracks, batch_size=3)
    assert solo_calls == 3 and shared.calls == 1 and shared.chunks == 3
    assert _max_diff(together, alone) <= TOL_BATCHED


def test_a_failing_call_fails_every_track_in_it_and_nothing_hangs():
    """An error in a shared call reaches each track whose chunks were in it; the other tracks go on."""
    import torch

    class Picky:
        domain = "waveform"

        def separate_chunks(self, x: torch.Tensor) -> torch.Tensor:
            if (x < 0).any():
                raise ValueError("negative input")
            return 2 * x

    shared = SharedBatches(Picky(), batch_size=2)
    results: dict = {}
    all_in = threading.Barrier(3)

    def work(name: str, x: torch.Tensor) -> None:
        with shared.track():
            all_in.wait()
            try:
                results[name] = shared.separate_chunks(x)
            except ValueError as exc:
                results[name] = exc

    inputs = {"a": torch.ones(1, 3), "b": -torch.ones(1, 3), "c": torch.ones(1, 5)}  # c: another shape
    run_in_threads([lambda item=item: work(*item) for item in inputs.items()])
    assert torch.equal(results["c"], 2 * inputs["c"])
    # a and b (same shape) ran together: both got the error
    assert isinstance(results["a"], ValueError) and isinstance(results["b"], ValueError)
