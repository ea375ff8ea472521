"""Storage URIs: local paths, file: and s3: URIs, malformed ones, and where S3 requests go
(endpoint and region only from the AWS environment and profile)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import boto3
import pytest

from explore.store import FeatureStore, StorageError, StorageURIError, join, resolve
from explore.store.uri import s3_endpoint


def test_resolve_and_join(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fs, path = resolve("cache/feat")
    assert type(fs).__name__ == "LocalFileSystem" and path == str(tmp_path / "cache" / "feat")
    assert resolve(f"file://{tmp_path}/x")[1] == str(tmp_path / "x")
    fs, path = resolve("s3://my-bucket/a//b/")
    assert type(fs).__name__ == "S3FileSystem" and path == "my-bucket/a/b"
    assert join("s3://b-1/root/", "features", "/k/") == "s3://b-1/root/features/k"
    assert join("/tmp/x", "a", "b.arrow") == "/tmp/x/a/b.arrow"
    with pytest.raises(ValueError, match="unsupported scheme"):
        resolve("gs://bucket/x")
    secret = os.environ["AWS_SECRET_ACCESS_KEY"]
    with pytest.raises(ValueError, match="credentials") as info:
        resolve(f"s3://AKIA:{secret}@bucket/x")
    assert secret not in str(info.value)


def test_file_uris_are_parsed_by_pyarrow(tmp_path):
    assert resolve(f"file://{tmp_path}/a%20b/c/")[1] == str(tmp_path / "a b" / "c")
    assert resolve(f"file://localhost{tmp_path}/x")[1] == str(tmp_path / "x")
    assert resolve(f"file:{tmp_path}/../x")[1] == str(tmp_path.parent / "x")
    for bad in ("file://otherhost/x", "file:relative/x"):
        with pytest.raises(StorageURIError, match="file:///abs/path"):
            resolve(bad)


@pytest.mark.parametrize(
    "uri, message",
    [
        ("s3:/bucket/x", "is not of the form s3://bucket/prefix"),
        ("s3:bucket", "is not of the form s3://bucket/prefix"),
        ("s3:", "is not of the form s3://bucket/prefix"),
        ("s3://", "names no bucket; expected s3://bucket/prefix"),
        ("s3:///prefix", "names no bucket; expected s3://bucket/prefix"),
        ("s3://Bad_Bucket/x", r"not a valid S3 bucket name \(expected s3://bucket/prefix\)"),
        ("gs3://bucket/x", r"unsupported scheme 'gs3:'; use s3://bucket/prefix"),
        ("S3://bucket/x", r"unsupported scheme 'S3:'; use s3://bucket/prefix"),
        ("feat:cache", r"unsupported scheme 'feat:'.*\./feat:cache"),
    ],
)
def test_malformed_uris_are_one_line_errors_never_local_dirs(tmp_path, monkeypatch, uri, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(StorageURIError, match=message) as info:
        resolve(uri)
    text = str(info.value)
    assert repr(uri) in text and "\n" not in text
    # both kinds of callers catch it: bad input (ValueError) and storage trouble
    assert isinstance(info.value, ValueError) and isinstance(info.value, StorageError)
    with pytest.raises(StorageURIError):
        FeatureStore(uri)
    assert list(tmp_path.iterdir()) == []  # nothing was created under the working directory


def test_a_local_path_with_a_colon_is_written_relative(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve("./feat:cache")[1] == str(tmp_path / "feat:cache")


def test_credentials_in_an_unknown_scheme_are_not_echoed():
    secret = os.environ["AWS_SECRET_ACCESS_KEY"]
    with pytest.raises(StorageURIError, match="unsupported scheme") as info:
        resolve(f"gs://key:{secret}@bucket/x")
    assert secret not in str(info.value)


def test_endpoint_comes_from_the_environment_service_variable_first(monkeypatch, tmp_path):
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:2")
    assert s3_endpoint() == "http://127.0.0.1:2"
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3")
    assert s3_endpoint() == "http://127.0.0.1:1"
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    assert s3_endpoint() is None
    monkeypatch.setenv("AWS_ENDPOINT_URL", "ftp://127.0.0.1:1")
    with pytest.raises(StorageError, match="not an http"):
        resolve("s3://bucket/x")


def test_region_comes_from_the_aws_environment(monkeypatch):
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-3")
    assert resolve("s3://bucket/x")[0].region == "eu-west-3"


_PROFILE_CHILD = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from explore.store import FeatureSet, FeatureSplit, FeatureStore
    from explore.store.uri import resolve, s3_endpoint

    uri = sys.argv[1]
    split = FeatureSplit(np.ones((3, 2), np.float32), np.array([0, 1, 0]))
    fset = FeatureSet({"train": split, "val": split, "test": split}, ("a", "b"))
    store = FeatureStore(uri)  # checks the bucket: fails unless the endpoint is right
    got = store.get_or_build("k", lambda: fset)  # the build lock goes through boto3
    print(json.dumps({"region": resolve(uri)[0].region, "endpoint": s3_endpoint(),
                      "rows": len(store.read("k").train)}))
    """
)


@pytest.mark.s3
def test_endpoint_and_region_from_the_aws_profile(s3_bucket, tmp_path):
    """No endpoint or region in the environment: both come from the active profile, for
    pyarrow's reads and writes and for boto3's lock alike. A fresh process, since the AWS
    SDK reads the config file once."""
    endpoint = os.environ["AWS_ENDPOINT_URL"]
    config = tmp_path / "config"
    config.write_text(
        f"[profile explore-test]\nregion = ap-south-1\nendpoint_url = {endpoint}\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_ENDPOINT_URL")}
    env.pop("AWS_DEFAULT_REGION", None)
    env.pop("AWS_REGION", None)
    env.update(AWS_CONFIG_FILE=str(config), AWS_PROFILE="explore-test")
    out = subprocess.run(
        [sys.executable, "-c", _PROFILE_CHILD, f"s3://{s3_bucket}/p"],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {
        "region": "ap-south-1", "endpoint": endpoint, "rows": 3
    }
    listed = boto3.client("s3").list_objects_v2(Bucket=s3_bucket, Prefix="p/features/k/")
    assert "p/features/k/manifest.json" in {o["Key"] for o in listed["Contents"]}
