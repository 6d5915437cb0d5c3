"""Mixture i = f(recipe, seed): bit-for-bit equal to the source-separation tutorial's code.

The functions ``tutorial_incoherent`` / ``tutorial_coherent`` / ``tutorial_mixture`` below restate
the tutorial's "Option 2" (seed per mixture) with plain Scaper, the way the tutorial writes them
(including its ``str.replace`` of the label in the source path), independent of sepcluster.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest

from sepcluster.compat import scaper
from sepcluster.generate.mixing import MixtureRenderer, is_coherent, make_mixture, render_jams, swap_label_folder
from sepcluster.generate.source_cache import SourceCache, library_cache, per_sample_chain, source_cache_bytes
from sepcluster.datasets.library import index_library
from sepcluster.generate.recipe import load_recipe
from tests.generate.test_recipe import TUTORIAL_YAML

TEMPLATE = {
    "label": ("const", "vocals"),
    "source_file": ("choose", []),
    "source_time": ("uniform", 0, 7),
    "event_time": ("const", 0),
    "event_duration": ("const", 5.0),
    "snr": ("uniform", -5, 5),
    "pitch_shift": ("uniform", -2, 2),
    "time_stretch": ("uniform", 0.8, 1.2),
}
LABELS = ["vocals", "drums", "bass", "other"]


def _tutorial_scaper(fg_folder, bg_folder, seed):
    sc = scaper.Scaper(duration=5.0, fg_path=str(fg_folder), bg_path=str(bg_folder), random_state=seed)
    sc.sr = 44100
    sc.ref_db = -20
    sc.n_channels = 1
    return sc


def tutorial_incoherent(fg_folder, bg_folder, event_template, seed):
    sc = _tutorial_scaper(fg_folder, bg_folder, seed)
    event_parameters = event_template.copy()
    for label in LABELS:
        event_parameters["label"] = ("const", label)
        sc.add_event(**event_parameters)
    return sc.generate(fix_clipping=True)


def tutorial_coherent(fg_folder, bg_folder, event_template, seed):
    sc = _tutorial_scaper(fg_folder, bg_folder, seed)
    event_parameters = event_template.copy()
    sc.add_event(**event_parameters)
    event = sc._instantiate_event(sc.fg_spec[0])
    sc.reset_fg_event_spec()
    event_parameters["source_time"] = ("const", event.source_time)
    event_parameters["pitch_shift"] = ("const", event.pitch_shift)
    event_parameters["time_stretch"] = ("const", event.time_stretch)
    for label in LABELS:
        event_parameters["label"] = ("const", label)
        event_parameters["source_file"] = ("const", event.source_file.replace("vocals", label))
        sc.add_event(**event_parameters)
    return sc.generate(fix_clipping=True)


def tutorial_mixture(fg_folder, bg_folder, event_template, seed):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore")
        random_state = np.random.RandomState(seed)
        if random_state.rand() > .5:
            return True, tutorial_coherent(fg_folder, bg_folder, event_template, seed)
        return False, tutorial_incoherent(fg_folder, bg_folder, event_template, seed)


def _check_equal_to_tutorial(library_root, seeds):
    fg = os.path.join(str(library_root), "foreground")
    bg = os.path.join(str(library_root), "background")
    assert "vocals" not in str(library_root)  # the tutorial's str.replace needs this
    recipe = load_recipe(TUTORIAL_YAML)
    library = index_library(str(library_root), recipe.labels)
    kinds = set()
    for seed in seeds:
        coherent, (mix, jam, _ann, stem_list) = tutorial_mixture(fg, bg, TEMPLATE, seed)
        ours = make_mixture(recipe, library, seed, dtype=np.float64)
        assert ours.coherent == coherent == is_coherent(seed, 0.5)
        kinds.add(coherent)
        assert ours.mixture.shape == mix.shape == (5 * 44100, 1)
        assert np.array_equal(ours.mixture, mix), seed  # bit for bit
        ann = jam.annotations.search(namespace="scaper")[0]
        for obs, stem in zip(ann.data, stem_list):
            label = obs.value["label"]
            assert np.array_equal(ours.stems[label], stem), (seed, label)
            assert ours.events[label]["source_file"] == \
                f"{label}/{os.path.basename(obs.value['source_file'])}"
            assert ours.events[label]["snr"] == obs.value["snr"]
        assert ours.jams == jam.dumps()
        # re-rendering the stored JAMS reproduces the audio (ours and plain scaper on a file)
        again = render_jams(ours.jams, library, recipe, dtype=np.float64)
        assert np.array_equal(again.mixture, mix)
        assert all(np.array_equal(again.stems[k], ours.stems[k]) for k in LABELS)
        if coherent:
            songs = {os.path.basename(e["source_file"]) for e in ours.events.values()}
            assert len(songs) == 1
            assert len({e["pitch_shift"] for e in ours.events.values()}) == 1
            assert len({e["time_stretch"] for e in ours.events.values()}) == 1
    return kinds


def test_equal_to_tutorial_code_synthetic_library(synth_library):
    # seeds 0 and 3 are coherent, 1 and 2 incoherent under the tutorial's coin
    assert _check_equal_to_tutorial(synth_library, [0, 1, 2]) == {True, False}


def test_equal_to_tutorial_code_musdb_sample(musdb_library):
    assert _check_equal_to_tutorial(musdb_library, [0, 1]) == {True, False}


def test_generate_from_jams_file_reproduces(synth_library, tmp_path):
    recipe = load_recipe(TUTORIAL_YAML)
    library = index_library(str(synth_library), recipe.labels)
    ours = make_mixture(recipe, library, 1, dtype=np.float64)
    path = tmp_path / "m.jams"
    path.write_text(ours.jams)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore")
        mix, _jam, _ann, _stems = scaper.generate_from_jams(str(path))
    assert np.array_equal(mix, ours.mixture)
    # the dataset's float32 form is Scaper's output rounded to float32
    ours32 = make_mixture(recipe, library, 1)
    assert ours32.mixture.dtype == np.float32 and np.array_equal(ours32.mixture, mix.astype(np.float32))


def test_swap_label_folder_only_touches_the_label_component(tmp_path):
    assert swap_label_folder("/data/vocals_lib/foreground/vocals/vocals and drums.wav", "drums") == \
        "/data/vocals_lib/foreground/drums/vocals and drums.wav"
    # a library whose path and song names contain a label still mixes coherently
    lib = tmp_path / "vocals_lib"
    for label in LABELS:
        (lib / "foreground" / label).mkdir(parents=True)
    (lib / "background").mkdir()
    import soundfile as sf

    t = np.arange(3 * 16000) / 16000
    for i, label in enumerate(LABELS):
        for song in ("vocals.wav", "bass line.wav"):
            sf.write(lib / "foreground" / label / song, 0.2 * np.sin(2 * np.pi * 110 * (i + 1) * t), 16000)
    from tests.generate.conftest import small_recipe

    recipe = load_recipe(small_recipe(coherent_probability=1.0, **{"event.source_time": ["uniform", 0, 1]}))
    library = index_library(str(lib), recipe.labels)
    for seed in range(3):
        result = make_mixture(recipe, library, seed)
        assert result.coherent
        songs = {e["source_file"].split("/", 1)[1] for e in result.events.values()}
        assert len(songs) == 1
        assert [e["source_file"].split("/")[0] for e in result.events.values()] == LABELS


def test_no_augmentation_and_stereo(small_library):
    from tests.generate.conftest import small_recipe

    recipe = load_recipe(small_recipe(channels=2, **{"event.pitch_shift": None, "event.time_stretch": None}))
    library = index_library(str(small_library), recipe.labels)
    for seed in (0, 1):
        a = make_mixture(recipe, library, seed)
        b = make_mixture(recipe, library, seed)
        assert a.mixture.shape == (16000, 2)
        assert np.array_equal(a.mixture, b.mixture) and a.jams == b.jams
        assert all(e["pitch_shift"] is None and e["time_stretch"] is None for e in a.events.values())
        assert np.allclose(sum(a.stems.values()), a.mixture, atol=1e-6)


# --------------------------------------------------------------------------- source cache

@pytest.fixture(scope="module")
def stereo_library(tmp_path_factory):
    """3 songs x 8 s, 44.1 kHz stereo: Scaper's SoX chain downmixes every segment to mono."""
    from tests.generate.conftest import make_library

    return make_library(tmp_path_factory.mktemp("lib") / "stereo", songs=3, seconds=8.0, channels=2)


def _no_augmentation_recipe(channels: int = 1):
    from tests.generate.test_recipe import TUTORIAL_YAML

    recipe = load_recipe(TUTORIAL_YAML)
    data = recipe.to_dict()
    data["channels"] = channels
    data["event"]["pitch_shift"] = None
    data["event"]["time_stretch"] = None
    return load_recipe(data)


def _render_all(recipe, library, seeds):
    return {seed: make_mixture(recipe, library, seed, dtype=np.float64) for seed in seeds}


def _assert_same_renders(a, b):
    for seed in a:
        assert a[seed].coherent == b[seed].coherent
        assert np.array_equal(a[seed].mixture, b[seed].mixture), seed  # bit for bit
        assert all(np.array_equal(a[seed].stems[k], b[seed].stems[k]) for k in a[seed].stems), seed
        assert a[seed].jams == b[seed].jams


@pytest.mark.parametrize("library_name,channels", [("stereo_library", 1), ("stereo_library", 2),
                                                   ("synth_library", 1), ("musdb_library", 1)])
def test_source_cache_serves_channel_conversion_bit_for_bit(library_name, channels, request):
    """Without pitch/time, the cached whole-file SoX output sliced = SoX on each segment."""
    root = request.getfixturevalue(library_name)
    recipe = _no_augmentation_recipe(channels)
    library = index_library(str(root), recipe.labels)
    seeds = range(8)
    plain = _render_all(recipe, library, seeds)
    cache = SourceCache(1 << 30)
    with cache.installed():
        first = _render_all(recipe, library, seeds)    # loads each file, checks its whole-file chain
        second = _render_all(recipe, library, seeds)   # every segment from the cache
        assert cache.chain_hits >= 4 * len(seeds)
        assert not cache.refused
    assert {r.coherent for r in plain.values()} == {True, False}
    _assert_same_renders(plain, first)
    _assert_same_renders(plain, second)


def test_source_cache_leaves_pitch_and_time_to_sox(synth_library):
    recipe = load_recipe(TUTORIAL_YAML)
    library = index_library(str(synth_library), recipe.labels)
    plain = _render_all(recipe, library, range(3))
    cache = SourceCache(1 << 30)
    with cache.installed():
        cached = _render_all(recipe, library, range(3))
        assert cache.chain_hits == 0 and cache.hits > 0  # sources cached, chains run in SoX
    _assert_same_renders(plain, cached)


def test_per_sample_chain_accepts_only_frame_by_frame_chains():
    sox = scaper.core.sox

    def tfm(**changes):
        t = sox.Transformer()
        t.convert(samplerate=44100, n_channels=1, bitdepth=None)
        t.set_output_format(rate=changes.pop("out_rate", 44100), channels=1, bits=changes.pop("bits", None))
        if changes.pop("pitch", False):
            t.pitch(1.0)
        if changes.pop("dither", False):
            t.set_globals(dither=True)
        return t

    assert per_sample_chain(tfm(), 44100)
    assert per_sample_chain(sox.Transformer(), 16000)          # no effect at all
    assert not per_sample_chain(tfm(), 22050)                   # a real resampling
    assert not per_sample_chain(tfm(out_rate=22050), 44100)
    assert not per_sample_chain(tfm(pitch=True), 44100)         # stateful effect
    assert not per_sample_chain(tfm(dither=True), 44100)
    assert not per_sample_chain(tfm(bits=16), 44100)            # requantized output


def test_source_cache_refuses_a_chain_whose_whole_file_output_differs(synth_library):
    """The first segment of a file is also run the ordinary way; a mismatch turns the cache off for it."""
    path = sorted((synth_library / "foreground" / "vocals").iterdir())[0]
    cache = SourceCache(1 << 30)
    tfm = scaper.core.sox.Transformer()
    stateful = lambda array: np.cumsum(array, axis=0)  # noqa: E731  (each output depends on every earlier frame)
    segment, _ = cache.read(str(path), start=1000, stop=5000, always_2d=True)
    out = cache.transform_segment(tfm, segment, 44100, stateful)
    assert np.array_equal(out, np.cumsum(segment, axis=0))     # the ordinary result
    assert len(cache.refused) == 1
    segment, _ = cache.read(str(path), start=1000, stop=5000, always_2d=True)
    assert cache.transform_segment(tfm, segment, 44100, stateful) is None  # left to SoX from now on
    # only the array read() returned last is served
    same_chain = lambda array: array.copy()  # noqa: E731
    other = SourceCache(1 << 30)
    segment, _ = other.read(str(path), start=0, stop=100, always_2d=True)
    assert other.transform_segment(tfm, segment.copy(), 44100, same_chain) is None
    assert other.transform_segment(tfm, segment, 44100, same_chain) is None  # consumed by the call above
    segment, _ = other.read(str(path), start=0, stop=100, always_2d=True)
    assert np.array_equal(other.transform_segment(tfm, segment, 44100, same_chain), segment)
    segment, _ = other.read(str(path), start=50, stop=150, always_2d=True)
    assert np.array_equal(other.transform_segment(tfm, segment, 44100, same_chain), segment)
    assert other.chain_hits == 1 and not other.refused


def test_source_cache_preload_runs_each_file_through_the_chains_seen(stereo_library):
    recipe = _no_augmentation_recipe(1)
    library = index_library(str(stereo_library), recipe.labels)
    paths = library.source_paths()
    assert len(paths) == 12 and all(os.path.isfile(p) for p in paths)
    import soundfile

    frames = sum(soundfile.info(p).frames for p in paths)
    assert library.total_frames == frames and library.decoded_bytes == frames * 2 * 4
    # decoded stereo float32 + the mono int32 channel conversion; with pitch/time only the sources
    assert source_cache_bytes(recipe, library) == frames * 2 * 4 + frames * 4
    assert source_cache_bytes(load_recipe(TUTORIAL_YAML), library) == library.decoded_bytes
    plain = _render_all(recipe, library, range(6))
    cache = SourceCache(1 << 30)
    with cache.installed():
        make_mixture(recipe, library, 1000)   # the chain is seen once ...
        cache.preload(paths)                  # ... and run over every file now
        assert cache.misses == 12 and not cache.refused
        assert cache.nbytes == source_cache_bytes(recipe, library)
        hits_before, chain_hits_before = cache.hits, cache.chain_hits
        cached = _render_all(recipe, library, range(6))
        assert cache.chain_hits - chain_hits_before == 4 * 6  # every event's segment from the cache
        assert cache.misses == 12 and cache.hits > hits_before  # nothing decoded during the renders
    _assert_same_renders(plain, cached)


def test_library_cache_holds_whole_files_only_when_the_library_fits(stereo_library):
    recipe = _no_augmentation_recipe(1)
    library = index_library(str(stereo_library), recipe.labels)
    need = source_cache_bytes(recipe, library)
    assert library_cache(recipe, library, need - 1).max_bytes == 0  # file info only
    assert library_cache(recipe, library, need).max_bytes == need


def test_source_cache_is_scoped_and_two_budgets_are_two_caches(stereo_library):
    """Installed only inside ``with``: scaper gets its own modules back, nested scopes restore the outer one."""
    core = scaper.core
    own = (core.soundfile, core.sox)
    small, large = SourceCache(0), SourceCache(1 << 30)
    with large.installed():
        assert core.soundfile is large
        with small.installed():
            assert core.soundfile is small and core.sox is not own[1]
        assert core.soundfile is large
    assert (core.soundfile, core.sox) == own
    try:
        with large.installed():
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert (core.soundfile, core.sox) == own  # restored on an error too
    assert (small.max_bytes, large.max_bytes) == (0, 1 << 30)


def test_mixture_renderer_equals_make_mixture(stereo_library):
    recipe = _no_augmentation_recipe(1)
    library = index_library(str(stereo_library), recipe.labels)
    plain = {seed: make_mixture(recipe, library, seed) for seed in range(4)}
    renderer = MixtureRenderer(recipe, library, cache_bytes=source_cache_bytes(recipe, library))
    renderer.render(0)
    renderer.preload()
    assert renderer.cache.misses == 12
    cached = {seed: renderer.render(seed) for seed in range(4)}
    assert renderer.cache.chain_hits >= 4 * 4
    assert MixtureRenderer(recipe, library, cache_bytes=0).cache is None  # plain Scaper
    _assert_same_renders(plain, cached)
    assert scaper.core.soundfile.__name__ == "soundfile"  # nothing left installed
