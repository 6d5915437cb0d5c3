"""storage: local and real-S3 (SeaweedFS on 127.0.0.1) behaviour, atomic writes, errors."""

import os

import numpy as np
import pyarrow as pa
import pytest

from sepcluster import storage
from sepcluster.errors import StorageError


def test_local_roundtrip_and_listing(tmp_path):
    base = str(tmp_path / "root")
    storage.write_text(storage.join(base, "a", "x.txt"), "hello")
    storage.write_bytes(storage.join(base, "b.bin"), b"\x00\x01")
    assert storage.read_text(storage.join(base, "a", "x.txt")) == "hello"
    assert storage.list_files(base) == [os.path.join(base, "a", "x.txt"), os.path.join(base, "b.bin")]
    assert storage.list_files(base, suffixes=(".TXT",)) == [os.path.join(base, "a", "x.txt")]
    assert storage.list_files(base, recursive=False) == [os.path.join(base, "b.bin")]
    assert storage.list_dirs(base) == [os.path.join(base, "a")]
    assert storage.exists("file://" + base) and storage.isdir(base)
    storage.delete(storage.join(base, "a"))
    assert not storage.exists(storage.join(base, "a"))


def test_atomic_output_leaves_nothing_on_error(tmp_path):
    target = str(tmp_path / "out.wav")
    storage.write_text(target, "old")
    with pytest.raises(RuntimeError):
        with storage.atomic_output(target) as tmp:
            with open(tmp, "w") as f:
                f.write("partial")
            raise RuntimeError("crash mid-write")
    assert storage.read_text(target) == "old"
    assert os.listdir(tmp_path) == ["out.wav"]  # no temp file left behind


def test_parquet_metadata_roundtrip(tmp_path):
    uri = str(tmp_path / "t" / "part.parquet")
    storage.write_parquet(pa.table({"x": np.arange(5)}), uri, metadata={"recipe_hash": "abc"})
    assert storage.read_parquet(str(tmp_path / "t")).column("x").to_pylist() == [0, 1, 2, 3, 4]
    assert storage.parquet_metadata(uri)["recipe_hash"] == "abc"


def test_missing_and_bad_scheme(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        storage.read_bytes(str(tmp_path / "nope"))
    with pytest.raises(StorageError, match="unsupported URI scheme"):
        storage.resolve("gs://bucket/x")


def test_redact(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "supersecretvalue")
    text = storage.redact("http://user:pw@host/x and supersecretvalue")
    assert "pw" not in text and "supersecretvalue" not in text


def test_s3_roundtrip_atomic_and_wrong_credentials(s3_bucket, monkeypatch):
    uri = storage.join(s3_bucket, "dir", "x.txt")
    storage.write_text(uri, "hello s3")
    assert storage.read_text(uri) == "hello s3"
    assert storage.list_files(s3_bucket) == [uri]
    big = os.urandom(12 << 20)  # multipart upload
    with storage.atomic_output(storage.join(s3_bucket, "big.bin")) as tmp:
        with open(tmp, "wb") as f:
            f.write(big)
    assert storage.read_bytes(storage.join(s3_bucket, "big.bin")) == big
    with pytest.raises(RuntimeError):
        with storage.atomic_output(storage.join(s3_bucket, "never.bin")) as tmp:
            raise RuntimeError("crash")
    assert not storage.exists(storage.join(s3_bucket, "never.bin"))
    with storage.local_copy(uri) as path:
        assert open(path).read() == "hello s3"
    storage.write_parquet(pa.table({"a": [1, 2]}), storage.join(s3_bucket, "p", "a.parquet"), {"k": "v"})
    assert storage.read_parquet(storage.join(s3_bucket, "p")).num_rows == 2

    bucket = s3_bucket[len("s3://"):]
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret-key")
    with pytest.raises(StorageError) as info:
        storage.read_text(uri)
    message = str(info.value)
    assert f"bucket '{bucket}'" in message and "access denied" in message
    assert "wrong-secret-key" not in message
