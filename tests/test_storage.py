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
    with pytest.raises(StorageError) as info:  # writes (botocore) say the same
        storage.write_text(storage.join(s3_bucket, "w.txt"), "x")
    assert f"bucket '{bucket}'" in str(info.value) and "access denied" in str(info.value)
    assert "wrong-secret-key" not in str(info.value)


# --------------------------------------------------------------------------- failed S3 writes leave nothing

class _FailingReader:
    """A real binary stream (``os.urandom`` data) whose reads fail after ``fail_after`` bytes, as a
    source file on a failing disk does; ``exc`` is what the failing read raises."""

    def __init__(self, fail_after: int, exc: BaseException):
        self.fail_after, self.exc, self.sent = fail_after, exc, 0

    def read(self, size: int = -1) -> bytes:
        if self.sent >= self.fail_after:
            raise self.exc
        size = self.fail_after - self.sent if size < 0 else min(size, self.fail_after - self.sent)
        self.sent += size
        return os.urandom(size)


def _bucket_keys(bucket_uri: str) -> list[str]:
    """Every key S3 lists in the bucket (hidden names included), straight from ListObjectsV2."""
    bucket = bucket_uri[len("s3://"):]
    pages = storage.s3_client(bucket).get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return sorted(item["Key"] for page in pages for item in page.get("Contents", []))


def _open_uploads(bucket_uri: str) -> list[str]:
    bucket = bucket_uri[len("s3://"):]
    return sorted(u["Key"] for u in storage.s3_client(bucket).list_multipart_uploads(Bucket=bucket).get("Uploads", []))


@pytest.mark.parametrize("exc", [OSError("disk read error"), KeyboardInterrupt()], ids=["oserror", "interrupt"])
def test_s3_write_failing_midway_leaves_no_object(s3_bucket, exc):
    uri = storage.join(s3_bucket, "out", "big.bin")
    source = _FailingReader(3 * storage.S3_PART_SIZE + 12345, exc)  # three parts uploaded, then the failure
    with pytest.raises((StorageError, KeyboardInterrupt)):
        storage.write_stream(uri, source)
    assert source.sent == 3 * storage.S3_PART_SIZE + 12345
    assert not storage.exists(uri)
    assert _bucket_keys(s3_bucket) == []
    assert _open_uploads(s3_bucket) == []  # the multipart upload was aborted, its parts dropped
    # the old object stays whole when a rewrite fails
    storage.write_bytes(uri, b"old content")
    with pytest.raises((StorageError, KeyboardInterrupt)):
        storage.write_stream(uri, _FailingReader(2 * storage.S3_PART_SIZE, exc))
    assert storage.read_bytes(uri) == b"old content"
    assert _bucket_keys(s3_bucket) == ["out/big.bin"] and _open_uploads(s3_bucket) == []


_KILLED_WRITER = """
import sys
from sepcluster import storage
print("writing", flush=True)
storage.write_stream(sys.argv[1], sys.stdin.buffer)
print("completed", flush=True)
"""


def test_s3_killed_writer_leaves_no_visible_object(s3_bucket, tmp_path):
    import signal
    import subprocess
    import sys
    import time

    uri = storage.join(s3_bucket, "stream", "killed.bin")
    script = tmp_path / "writer.py"
    script.write_text(_KILLED_WRITER)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.Popen([sys.executable, str(script), uri], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            cwd=root, env={**os.environ, "PYTHONPATH": root})
    try:
        assert proc.stdout.readline() == b"writing\n"
        # two whole parts and a piece of the third: the writer uploads parts 1 and 2, then waits for more
        proc.stdin.write(os.urandom(2 * storage.S3_PART_SIZE + (1 << 20)))
        proc.stdin.flush()
        bucket, key = s3_bucket[len("s3://"):], "stream/killed.bin"
        client = storage.s3_client(bucket)
        deadline = time.time() + 120
        while True:
            uploads = client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
            parts = [p for u in uploads
                     for p in client.list_parts(Bucket=bucket, Key=key, UploadId=u["UploadId"]).get("Parts", [])]
            if len(parts) >= 2:
                break
            assert time.time() < deadline, "the writer never uploaded two parts"
            assert proc.poll() is None
            time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)  # mid-upload: the multipart upload is never completed
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not storage.exists(uri)
    assert storage.list_files(s3_bucket) == []
    assert _bucket_keys(s3_bucket) == []  # S3 shows no object, not even a hidden partial one
    assert _open_uploads(s3_bucket) == [key]  # only the incomplete upload (a lifecycle rule reclaims it)


def test_s3_write_paths_roundtrip(s3_bucket):
    # every size class: empty, one PutObject, exactly one part, several parts with a short last one
    for size in (0, 1000, storage.S3_PART_SIZE, 2 * storage.S3_PART_SIZE + 7):
        data = os.urandom(size)
        uri = storage.join(s3_bucket, f"r{size}.bin")
        storage.write_bytes(uri, data)
        assert storage.read_bytes(uri) == data
        with storage.atomic_output(storage.join(s3_bucket, f"a{size}.bin")) as tmp:
            with open(tmp, "wb") as f:
                f.write(data)
        assert storage.read_bytes(storage.join(s3_bucket, f"a{size}.bin")) == data
    assert _open_uploads(s3_bucket) == []


def test_s3_region_resolution(monkeypatch):
    for key in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)  # no profile region from this machine's ~/.aws
    monkeypatch.setenv("AWS_ENDPOINT_URL", "https://s3.eu-west-3.amazonaws.com")
    assert storage.s3_region("b") == "eu-west-3"
    for endpoint, region in (("https://s3-us-west-2.amazonaws.com", "us-west-2"),
                             ("https://s3.dualstack.ap-south-1.amazonaws.com", "ap-south-1"),
                             ("https://s3.eu-central-1.wasabisys.com", "eu-central-1"),
                             ("http://minio.storage.svc:9000", None), ("http://127.0.0.1:9000", None)):
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
        assert storage.s3_region("b") == region, endpoint
    assert storage.s3_filesystem("b").region == "us-east-1"  # the SDK's default for a server that names none
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    assert storage.s3_region("KEY:SECRET@bucket") is None  # AWS, not a bucket name: no lookup, the SDK default
    monkeypatch.setenv("AWS_DEFAULT_REGION", "ca-central-1")
    assert storage.s3_region("b") == "ca-central-1" and storage.s3_filesystem("b").region == "ca-central-1"
    monkeypatch.setenv("AWS_REGION", "eu-north-1")
    assert storage.s3_region() == "eu-north-1"
    assert storage.s3_filesystem().region == "eu-north-1"
    assert storage.s3_client().meta.region_name == "eu-north-1"


def test_s3_unreachable_endpoint_names_it(monkeypatch):
    from sepcluster.localcluster import free_port_block

    port = free_port_block(1)  # nothing listens there
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret-value")
    with pytest.raises(StorageError, match=f"cannot reach the S3 endpoint http://127.0.0.1:{port}") as info:
        storage.write_bytes(f"s3://bucket-{port}/x.bin", b"data")
    assert "secret-value" not in str(info.value)
