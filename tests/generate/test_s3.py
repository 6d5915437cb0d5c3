"""Generate into s3:// (and from an s3:// stem library) on a real SeaweedFS server."""

from __future__ import annotations

import os
import shutil

import numpy as np

from sepcluster import raycluster, storage
from sepcluster.generate import dataset_recipe, generate, iter_mixtures, load_mixture, read_manifest
from sepcluster.generate.mixing import make_mixture
from sepcluster.datasets.library import _cache_dir_for, index_library
from sepcluster.generate.recipe import load_recipe
from sepcluster.generate.runner import regenerate
from tests.generate.conftest import small_recipe


def test_s3_round_trip(s3_bucket, small_library, sepcluster_home):
    # the stem library goes to S3 too: actors sync it to a local cache once
    stems_uri = storage.join(s3_bucket, "stems")
    for root, _dirs, files in os.walk(small_library):
        for name in files:
            rel = os.path.relpath(os.path.join(root, name), small_library)
            storage.write_bytes(storage.join(stems_uri, *rel.split(os.sep)), open(os.path.join(root, name), "rb").read())
    out = storage.join(s3_bucket, "datasets", "mix")
    # a Ray started now: its workers see the AWS_* environment the fixture set (credentials never
    # travel in Ray's runtime env)
    raycluster.shutdown()
    raycluster.init(address="local", num_cpus=2)
    try:
        summary = generate(small_recipe(), stems_uri, out, 5, num_actors=2, shard_size=2, audio_format="flac16")
        assert summary.complete and summary.generated == 5
        assert [s["name"] for s in read_manifest(out)] == [
            "shard-0000000000-0000000001.parquet", "shard-0000000002-0000000003.parquet",
            "shard-0000000004-0000000004.parquet"]
        assert storage.exists(storage.join(out, "_dataset.json"))
        assert storage.exists(storage.join(out, "_manifest.json"))
        recipe = load_recipe(small_recipe())
        assert dataset_recipe(out).hash == recipe.hash
        library = index_library(str(small_library), recipe.labels)
        seeds = []
        for m in iter_mixtures(out):
            seeds.append(m.seed)
            fresh = make_mixture(recipe, library, m.seed)
            assert np.max(np.abs(m.mixture - fresh.mixture)) <= 2.0 ** -15
            assert m.events == fresh.events
        assert seeds == [0, 1, 2, 3, 4]
        one = load_mixture(out, 3)
        assert one.seed == 3 and one.mixture.shape == (16000, 1)
        report = regenerate(out, 3, stems_dir=stems_uri)
        assert report["identical"] and report["jams_identical"] and report["jams_render_identical"]
        # a rerun against S3 skips every committed shard
        again = generate(small_recipe(), stems_uri, out, 5, num_actors=1, audio_format="flac16")
        assert again.generated == 0 and again.shards_skipped == 3
        assert "secret" not in str(summary.to_dict()).lower()
    finally:
        raycluster.shutdown()
        shutil.rmtree(_cache_dir_for(stems_uri), ignore_errors=True)
