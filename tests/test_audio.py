"""audio: formats, stem.mp4 streams, resampling, errors that name the file."""

import subprocess

import numpy as np
import pytest
import soundfile as sf

from sepcluster import audio
from sepcluster.errors import AudioError


def _tone(sr, seconds=0.5, channels=2):
    t = np.arange(int(sr * seconds)) / sr
    x = 0.3 * np.sin(2 * np.pi * 440 * t)
    return np.stack([x * (c + 1) / channels for c in range(channels)], axis=1).astype(np.float32)


@pytest.mark.parametrize("fmt,bits,tol", [("wav", 16, 1e-4), ("wav", 24, 1e-6), ("wav", 32, 0),
                                          ("flac", 16, 1e-4), ("flac", 24, 1e-6), ("aiff", 16, 1e-4)])
def test_write_read_roundtrip(tmp_path, fmt, bits, tol):
    x = _tone(22050)
    uri = str(tmp_path / f"x.{fmt}")
    audio.write_audio(uri, x, 22050, format=fmt, bits=bits)
    y, sr = audio.read_audio(uri)
    assert sr == 22050 and y.shape == x.shape and y.dtype == np.float32
    assert np.max(np.abs(y - x)) <= tol
    info = audio.audio_info(uri)
    assert (info.sample_rate, info.channels, info.frames) == (22050, 2, x.shape[0])


def test_encode_decode_bytes():
    x = _tone(16000, channels=1)
    y, sr = audio.decode_audio(audio.encode_audio(x, 16000, "flac", 24))
    assert sr == 16000 and y.shape == (x.shape[0], 1) and np.max(np.abs(y - x)) < 1e-6


def test_resample_lengths_and_content():
    x = _tone(8000, seconds=1.0)
    y = audio.resample(x, 8000, 44100)
    assert y.shape == (44100, 2) and y.dtype == np.float32
    back = audio.resample(y, 44100, 8000)
    assert np.max(np.abs(back[100:-100] - x[100:-100])) < 1e-3


def test_mp3_via_ffmpeg(tmp_path):
    wav = tmp_path / "x.wav"
    sf.write(wav, _tone(44100, 1.0), 44100)
    mp3 = tmp_path / "x.mp3"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(wav), str(mp3)], check=True)
    y, sr = audio.read_audio(str(mp3), sample_rate=22050)
    assert sr == 22050 and y.shape[1] == 2 and abs(y.shape[0] - 22050) < 2000


def test_stem_mp4_streams(musdb_sample):
    stem = musdb_sample / "stems" / "Music Delta - 80s Rock.stem.mp4"
    mix, sr = audio.read_audio(str(stem), stream=0)
    vocals, _ = audio.read_audio(str(stem), stream=4)
    wav, _ = audio.read_audio(str(musdb_sample / "train" / "Music Delta - 80s Rock" / "vocals.wav"))
    assert sr == 44100 and mix.shape[1] == 2
    n = min(len(vocals), len(wav))
    assert np.corrcoef(vocals[:n, 0], wav[:n, 0])[0, 1] > 0.99


def test_errors_name_the_file(tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(AudioError, match="empty.wav: the file is empty"):
        audio.read_audio(str(empty))
    corrupt = tmp_path / "corrupt.flac"
    corrupt.write_bytes(b"not audio at all" * 100)
    with pytest.raises(AudioError, match="corrupt.flac: not a readable audio file"):
        audio.read_audio(str(corrupt))
    nan = tmp_path / "nan.wav"
    x = _tone(8000)
    x[10, 0] = np.nan
    sf.write(nan, x, 8000, subtype="FLOAT")
    with pytest.raises(AudioError, match="nan.wav: the audio holds NaN"):
        audio.read_audio(str(nan))
    with pytest.raises(AudioError, match="no such file"):
        audio.read_audio(str(tmp_path / "missing.wav"))
    with pytest.raises(AudioError, match="flac.*32"):
        audio.write_audio(str(tmp_path / "x.flac"), x, 8000, format="flac", bits=32)
