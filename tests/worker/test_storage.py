"""Delivery of finished videos: upload to an S3-compatible server (moto on loopback), base64, local file."""

from __future__ import annotations

import base64
import uuid

import boto3
import pytest
import requests

from worker import storage
from worker.settings import BucketSettings
from worker.storage import Storage, StorageError


@pytest.fixture
def bucket_settings(moto_endpoint, make_settings):
    """Settings pointing at a fresh bucket on the moto server."""
    name = f"scail-{uuid.uuid4().hex[:12]}"
    bucket = BucketSettings(moto_endpoint, "test", "test", name, "us-east-1", "scail/")
    boto3.client(
        "s3", endpoint_url=moto_endpoint, aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1"
    ).create_bucket(Bucket=name)
    return make_settings(bucket=bucket, url_expiry_s=600)


@pytest.fixture
def video(tmp_path, demo_media):
    path = tmp_path / "video.mp4"
    path.write_bytes(demo_media.driving_video.read_bytes())
    return path


def test_upload_answers_a_url_serving_the_same_bytes_as_video_mp4(bucket_settings, video):
    answer = Storage(bucket_settings).deliver(video, "job-1", "video", inline=False)
    response = requests.get(answer["video_url"], timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "video/mp4"
    assert response.content == video.read_bytes()


def test_upload_key_is_prefixed_per_job(bucket_settings, video):
    answer = Storage(bucket_settings).deliver(video, "job/../7", "video", inline=False)
    assert f"/{bucket_settings.bucket.name}/scail/job_.._7/video.mp4?" in answer["video_url"]


def test_presigned_url_carries_the_configured_expiry(bucket_settings, video):
    answer = Storage(bucket_settings).deliver(video, "job-2", "video", inline=False)
    assert "X-Amz-Expires=600" in answer["video_url"]


def test_large_file_is_uploaded_in_parts(bucket_settings, tmp_path, monkeypatch):
    monkeypatch.setattr(storage, "MULTIPART_THRESHOLD", 5 << 20)
    monkeypatch.setattr(storage, "MULTIPART_CHUNK", 5 << 20)
    big = tmp_path / "big.mp4"
    big.write_bytes(b"\0\0\0\x20ftypisom" + bytes(11 << 20))
    answer = Storage(bucket_settings).deliver(big, "job-3", "video", inline=False)
    response = requests.get(answer["video_url"], timeout=30)
    assert response.content == big.read_bytes()
    assert response.headers["ETag"].strip('"').endswith("-3")  # a multipart ETag counts its parts


def test_unreachable_bucket_is_a_storage_error_naming_it(make_settings, video):
    bucket = BucketSettings("http://127.0.0.1:9", "k", "s", "nowhere", "us-east-1", "")
    with pytest.raises(StorageError, match="upload to bucket 'nowhere' at http://127.0.0.1:9 failed"):
        Storage(make_settings(bucket=bucket)).deliver(video, "job-4", "video", inline=False)


def test_small_video_is_answered_inline_when_asked(make_settings, video):
    answer = Storage(make_settings()).deliver(video, "job-5", "video", inline=True)
    assert base64.b64decode(answer["video_base64"]) == video.read_bytes()


def test_video_over_the_base64_limit_falls_back_with_a_warning(make_settings, video):
    settings = make_settings(max_base64_bytes=100)
    answer = Storage(settings).deliver(video, "job-6", "video", inline=True)
    assert "video_base64" not in answer
    assert "over the base64 limit of 100" in answer["warning"]
    assert open(answer["video_path"], "rb").read() == video.read_bytes()


def test_without_a_bucket_the_video_is_kept_in_the_output_dir(make_settings, video):
    settings = make_settings()
    answer = Storage(settings).deliver(video, "job-7", "video", inline=False)
    assert answer == {"video_path": str((settings.output_dir / "job-7" / "video.mp4").resolve())}

