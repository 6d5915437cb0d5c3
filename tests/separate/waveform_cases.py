"""Helpers of the waveform engine tests: small random-weight demucs models and MSST RoFormers saved as
their projects save them, the references' own inference as oracles, track lengths that stress the chunking.

Oracles (test-only, real packages): demucs 4.1.0 (``demucs.apply.apply_model`` on the model demucs'
own loader reads back from the file) and the PyPI package ``msst`` 0.1.0 (ZFTurbo's
Music-Source-Separation-Training as a package: ``msst.utils.model_utils.demix`` with MSST's own
model classes, installed ``--no-deps`` with ``ml-collections``; its torch pin ``<2.12`` is not
needed by ``demix``).
"""

from __future__ import annotations

import warnings
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.models.foreign_files import SOURCES4, bs_options, mel_options, save_msst

SR = 44100


@pytest.fixture()
def one_thread():
    """One intra-op thread while a test runs (both sides alike): on a shared 2-core machine two
    OpenMP threads wait at every op's barrier for a descheduled peer, 10-20x slower for small models."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

HT_SEGMENT = Fraction(39, 5)  # htdemucs / htdemucs_ft / htdemucs_6s: 7.8 s, 343980 samples
TOL = 1e-6  # max |diff| vs the reference with its own batch composition (measured: 0.0; HTDemucs 4e-8)
TOL_BATCHED = 1e-5  # with other batches / threads than the reference's (measured: <= 1e-7)


def small_htdemucs(sources=SOURCES4, seed: int = 0, samplerate: int = SR, segment=HT_SEGMENT, depth: int = 4,
                   nfft: int = 4096):
    """An HTDemucs with few channels; by default htdemucs' STFT (4096), depth (4) and segment (7.8 s)."""
    from demucs.htdemucs import HTDemucs

    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return HTDemucs(sources=list(sources), samplerate=samplerate, segment=segment, channels=8, depth=depth,
                        nfft=nfft, t_layers=1, t_heads=2, bottom_channels=0, t_hidden_scale=1.0)


def demucs_reference(path):
    """The model as demucs' own loader reads ``path`` (``demucs.states.load_model``), in eval mode."""
    from demucs.states import load_model

    return load_model(str(path)).eval()


def apply_model(model, audio: np.ndarray) -> np.ndarray:
    """demucs' ``apply_model(shifts=0, split=True, overlap=0.25)`` on ``audio (samples, channels)`` ->
    ``(sources, samples, channels)``."""
    from demucs.apply import apply_model as demucs_apply

    mix = torch.from_numpy(np.ascontiguousarray(audio.T))[None]
    with torch.no_grad():
        out = demucs_apply(model, mix, shifts=0, split=True, overlap=0.25)[0]
    return out.numpy().transpose(0, 2, 1)


def max_diff(ours: dict, reference: np.ndarray, sources) -> float:
    return max(float(np.abs(ours[s] - reference[i]).max()) for i, s in enumerate(sources))


def short_last_chunk(segment_length: int, chunks: int = 3, extra: int = 3, overlap: float = 0.25) -> int:
    """A track length whose last chunk (apply_model's offsets) holds only ``extra`` samples."""
    return (chunks - 1) * int((1 - overlap) * segment_length) + extra


# --- MSST


def roformer_options(kind: str, stems: int = 1) -> dict:
    """The tests' small RoFormers with an STFT of 512 / hop 256 (257 bins): cheap per second of audio."""
    stft = dict(stft_n_fft=512, stft_hop_length=256, stft_win_length=512, dim_freqs_in=257, num_stems=stems)
    if kind == "bs_roformer":
        return bs_options(freqs_per_bands=(2,) * 8 + (4,) * 8 + (209,), **stft)
    return mel_options(**stft)


def save_roformer(kind: str, folder: Path, name: str, *, stems: int = 1, sample_rate: int = SR, **yaml_kw):
    """``<name>.ckpt`` + ``<name>.yaml`` as MSST writes them; returns (checkpoint, config)."""
    ckpt, config, _ = save_msst(kind, folder, name=name, options=roformer_options(kind, stems), **yaml_kw)
    if sample_rate != SR:
        config.write_text(config.read_text().replace("  sample_rate: 44100\n", f"  sample_rate: {sample_rate}\n", 1))
    return ckpt, config


def msst_demix(kind: str, ckpt, config, audio: np.ndarray) -> dict:
    """MSST's own inference: ``demix`` of the ``msst`` package with MSST's own model class and the
    checkpoint's weights, on ``audio (samples, channels)`` -> ``{instrument: (samples, channels)}``."""
    from ml_collections import ConfigDict
    from msst.utils.model_utils import demix

    from sepcluster.models.safeload import load_yaml_tuples

    cfg = ConfigDict(load_yaml_tuples(str(config)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if kind == "bs_roformer":
            from msst.models.bs_roformer.bs_roformer import BSRoformer as Model
        else:
            from msst.models.bs_roformer.mel_band_roformer import MelBandRoformer as Model
        model = Model(**dict(cfg.model)).eval()
    model.load_state_dict(torch.load(str(ckpt), weights_only=True))
    out = demix(cfg, model, np.ascontiguousarray(audio.T), "cpu", kind)
    return {k: v.T for k, v in out.items()}
