"""Where an S3 bucket lives: the endpoint URL and the region, from the environment, the endpoint's
host name, the AWS profile, or (on AWS itself) the bucket. :mod:`sepcluster.storage` builds its
clients from these."""

from __future__ import annotations

import functools
import os
import re
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.fs as pafs

_AWS_REGION_NAME = re.compile(r"^[a-z]{2}(?:-[a-z]+)+-\d+$")  # eu-west-1, us-gov-west-1, us-west-004
_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def endpoint() -> str | None:
    """The S3 endpoint URL from the environment (with a scheme), or None for AWS itself."""
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if not endpoint:
        return None
    return endpoint if "://" in endpoint else f"https://{endpoint}"


def _endpoint_region(endpoint: str) -> str | None:
    """The region named in an endpoint's host (``s3.eu-west-1.amazonaws.com``, ``s3-us-west-2...``)."""
    labels = (urlparse(endpoint).hostname or "").lower().split(".")
    for i, label in enumerate(labels):
        if label.startswith("s3-") and _AWS_REGION_NAME.match(label[3:]):
            return label[3:]
        if label in ("s3", "s3-fips"):
            rest = [x for x in labels[i + 1:] if x not in ("dualstack", "fips")]
            if rest and _AWS_REGION_NAME.match(rest[0]):
                return rest[0]
    return None


@functools.lru_cache(maxsize=1)
def _profile_region(profile: str | None, config_file: str | None) -> str | None:
    """The region of the AWS profile (``~/.aws/config``), or None."""
    try:
        import botocore.session

        return botocore.session.Session().get_config_variable("region") or None
    except Exception:  # a broken config file: no region from it
        return None


@functools.lru_cache(maxsize=64)
def _bucket_region(bucket: str) -> str | None:
    """The region AWS reports for ``bucket`` (one HEAD request), or None when it cannot be asked."""
    try:
        return pafs.resolve_s3_region(bucket)
    except (OSError, pa.ArrowException, ValueError):
        return None


def s3_region(bucket: str | None = None) -> str | None:
    """The S3 region: ``AWS_REGION``, ``AWS_DEFAULT_REGION``, the endpoint's host name, the AWS profile,
    then (AWS itself, no endpoint set) the region of ``bucket``; None when nothing says (the SDK default)."""
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        return region
    endpoint_url = endpoint()
    region = (_endpoint_region(endpoint_url) if endpoint_url else None) or _profile_region(
        os.environ.get("AWS_PROFILE"), os.environ.get("AWS_CONFIG_FILE"))
    if region or endpoint_url or not bucket or not _BUCKET_NAME.match(bucket):
        return region
    return _bucket_region(bucket)
