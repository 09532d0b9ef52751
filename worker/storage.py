"""Hand a finished video to the user: S3 upload with a presigned URL, inline base64, or a local file.

RunPod's own `rp_upload` has no video helper and silently falls back to a local folder without a
bucket, so uploads go through boto3 directly: explicit bucket and key, `Content-Type: video/mp4`,
multipart above a threshold, and a presigned GET URL that expires after `SCAIL_URL_EXPIRY_S`.
"""

from __future__ import annotations

import base64
import logging
import re
import shutil
from pathlib import Path

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from worker.settings import BucketSettings, Settings

log = logging.getLogger(__name__)

MULTIPART_THRESHOLD = 64 << 20
MULTIPART_CHUNK = 16 << 20
CONTENT_TYPE = "video/mp4"


class StorageError(Exception):
    """The finished video could not be delivered (bucket unreachable, refused credentials, full disk)."""


class Storage:
    """Delivers a job's videos; one instance per process (the boto3 client is reused)."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._client = _s3_client(settings.bucket) if settings.bucket else None

    @property
    def uploads(self) -> bool:
        return self._client is not None

    def deliver(self, path: Path, job_id: str, name: str, *, inline: bool) -> dict:
        """`{"<name>_url"}`, `{"<name>_base64"}` or `{"<name>_path"}` for the file at `path`.

        `inline` asks for base64; it is honoured only under `SCAIL_MAX_BASE64_BYTES`, otherwise the
        answer falls back to the upload (or local file) and says why in `warning`.
        """
        size = path.stat().st_size
        if inline and size <= self.settings.max_base64_bytes:
            return {f"{name}_base64": base64.b64encode(path.read_bytes()).decode("ascii")}
        answer: dict = {}
        if inline:
            answer["warning"] = (
                f"{name} is {size} bytes, over the base64 limit of {self.settings.max_base64_bytes}; "
                + ("uploaded instead" if self.uploads else "written to a local file instead")
            )
        if self._client is not None:
            answer[f"{name}_url"] = self._upload(path, job_id, name)
        else:
            answer[f"{name}_path"] = str(self._keep_locally(path, job_id, name))
        return answer

    def _upload(self, path: Path, job_id: str, name: str) -> str:
        bucket = self.settings.bucket
        key = f"{bucket.key_prefix}{_safe(job_id)}/{name}.mp4"
        transfer = TransferConfig(multipart_threshold=MULTIPART_THRESHOLD, multipart_chunksize=MULTIPART_CHUNK)
        try:
            self._client.upload_file(
                str(path), bucket.name, key, ExtraArgs={"ContentType": CONTENT_TYPE}, Config=transfer
            )
            url = self._client.generate_presigned_url(
                "get_object", Params={"Bucket": bucket.name, "Key": key}, ExpiresIn=self.settings.url_expiry_s
            )
        except (BotoCoreError, ClientError, boto3.exceptions.S3UploadFailedError) as exc:
            raise StorageError(f"upload to bucket {bucket.name!r} at {bucket.endpoint_url} failed: {exc}") from None
        log.info("uploaded %s (%d bytes) to s3://%s/%s", name, path.stat().st_size, bucket.name, key)
        return url

    def _keep_locally(self, path: Path, job_id: str, name: str) -> Path:
        target_dir = self.settings.output_dir / _safe(job_id)
        try:
            target_dir.mkdir(parents=True, exist_ok=True)
            target = shutil.copyfile(path, target_dir / f"{name}.mp4")
        except OSError as exc:
            raise StorageError(f"cannot write {name} to {target_dir}: {exc}") from None
        return Path(target).resolve()


def _s3_client(bucket: BucketSettings):
    return boto3.client(
        "s3",
        endpoint_url=bucket.endpoint_url,
        aws_access_key_id=bucket.access_key_id,
        aws_secret_access_key=bucket.secret_access_key,
        region_name=bucket.region,
        config=Config(signature_version="s3v4", retries={"max_attempts": 5, "mode": "standard"}),
    )


def _safe(text: str) -> str:
    """A job id usable as one path / key segment."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", text)[:128] or "job"
