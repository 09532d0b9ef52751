"""Bring a job's media input onto local disk: http(s) URL, data URI / base64, or a file in the model root.

Every form is held to the same byte cap and its content is sniffed (the first bytes, not the name or a
Content-Type header), so a wrong or hostile input fails here with a message naming the field.
URL fetches refuse private, loopback, link-local and reserved addresses (SSRF) unless
`SCAIL_ALLOW_PRIVATE_URLS=1`; redirects are followed by hand so every hop is checked. The check
resolves the host once before the request, which leaves a DNS-rebinding window; the byte cap and
timeouts bound what that can reach.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import logging
import re
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urljoin, urlsplit

import requests

from common.errors import InputError
from worker.settings import Settings

log = logging.getLogger(__name__)

MediaKind = Literal["image", "video"]

_MAX_REDIRECTS = 5
_CHUNK = 1 << 20
_BASE64_RE = re.compile(r"^[A-Za-z0-9+/_\-\s]+=*\s*$")
_DATA_URI_RE = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w.+-]+=[\w.+-]+)*)(?P<b64>;base64)?,", re.I)
_NOT_AN_INPUT = "not an http(s) URL, a data URI, base64, or a path in the model root"
# ISO-BMFF brands that are still images (HEIF / AVIF) rather than movies.
_IMAGE_BRANDS = {b"avif", b"avis", b"heic", b"heix", b"mif1", b"msf1"}


@dataclass(frozen=True)
class Sniffed:
    """What the first bytes of a file say it is."""

    kind: MediaKind
    format: str


def sniff(head: bytes) -> Sniffed | None:
    """The media type of a file from its first 32 bytes; None when it is neither image nor video."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return Sniffed("image", "png")
    if head.startswith(b"\xff\xd8\xff"):
        return Sniffed("image", "jpeg")
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return Sniffed("image", "webp")
    if head.startswith((b"GIF87a", b"GIF89a")):
        return Sniffed("image", "gif")
    if head.startswith(b"BM"):
        return Sniffed("image", "bmp")
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return Sniffed("image", "tiff")
    if head[4:8] == b"ftyp":
        return Sniffed("image", "heif") if head[8:12] in _IMAGE_BRANDS else Sniffed("video", "mp4")
    if head[4:8] in (b"moov", b"mdat", b"wide", b"free"):
        return Sniffed("video", "mov")
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return Sniffed("video", "webm")
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return Sniffed("video", "avi")
    return None


def fetch_input(value: str, field: str, kind: MediaKind, dest_dir: Path, settings: Settings) -> Path:
    """A local file holding the input `value` of `field`, checked to be a `kind` (GIF counts as video too)."""
    value = value.strip()
    scheme = urlsplit(value).scheme.lower() if "://" in value else ""
    dest = dest_dir / f"{field}.input"
    if scheme in ("http", "https"):
        _download(value, dest, field, settings)
    elif scheme:
        raise InputError(f"{field}: URL scheme {scheme!r} is not supported (use http(s), a data URI or base64)")
    elif value[:5].lower() == "data:":
        _write_data_uri(value, dest, field, settings)
    else:
        dest = _volume_file(value, field, settings) or _write_base64(value, dest, field, settings)
    _check_content(dest, field, kind)
    return dest


def _check_content(path: Path, field: str, kind: MediaKind) -> None:
    with open(path, "rb") as f:
        sniffed = sniff(f.read(32))
    if sniffed is None:
        raise InputError(f"{field}: the content is neither a known image nor a video format")
    if sniffed.kind != kind and not (kind == "video" and sniffed.format == "gif"):
        raise InputError(f"{field}: expected {'an image' if kind == 'image' else 'a video'}, got {sniffed.format}")


# --- volume paths ---------------------------------------------------------------------------------


def _volume_file(value: str, field: str, settings: Settings) -> Path | None:
    """The file under the model root that `value` names; None when `value` is base64 rather than a path.

    Base64 has no dots and may start with "/" (every JPEG's does: "/9j/"), so a long dot-free
    base64-looking value is a path only when such a file exists in the root (no image fits in 64 chars).
    """
    root = settings.model_root.resolve()
    path = (root / value).resolve()  # resolves `..` and symlinks, so both are judged by where they land
    inside = path.is_relative_to(root)
    if "." not in value and len(value) >= 64 and _BASE64_RE.match(value):
        return path if inside and len(value) < 1024 and path.is_file() else None
    if not inside:
        raise InputError(f"{field}: path {value!r} is outside the model root")
    if not path.is_file():
        if "/" not in value and "." not in value:  # no file name shape either: say what was expected
            raise InputError(f"{field}: {_NOT_AN_INPUT}")
        raise InputError(f"{field}: file {value!r} not found in the model root")
    size = path.stat().st_size
    if size > settings.max_download_bytes:
        raise InputError(f"{field}: file is {size} bytes, over the limit of {settings.max_download_bytes}")
    return path


# --- base64 and data URIs -------------------------------------------------------------------------


def _write_data_uri(value: str, dest: Path, field: str, settings: Settings) -> None:
    match = _DATA_URI_RE.match(value)
    if match is None or not match.group("b64"):
        raise InputError(f"{field}: malformed data URI (expected data:<type>;base64,<data>)")
    _write_base64(value[match.end() :], dest, field, settings)


def _write_base64(value: str, dest: Path, field: str, settings: Settings) -> Path:
    if not _BASE64_RE.match(value):
        raise InputError(f"{field}: {_NOT_AN_INPUT}")
    if len(value) * 3 // 4 > settings.max_download_bytes:
        raise InputError(f"{field}: base64 data is over the limit of {settings.max_download_bytes} bytes")
    compact = "".join(value.split())
    compact += "=" * (-len(compact) % 4)
    try:
        data = base64.b64decode(compact, altchars=b"-_" if ("-" in compact or "_" in compact) else None, validate=True)
    except binascii.Error as exc:
        raise InputError(f"{field}: invalid base64 ({exc})") from None
    dest.write_bytes(data)
    return dest


# --- URLs -----------------------------------------------------------------------------------------


class _Retryable(Exception):
    """A download attempt failed in a way another attempt may fix."""


def _download(url: str, dest: Path, field: str, settings: Settings) -> None:
    """Stream `url` into `dest` with retries on connection errors, 429 and 5xx."""
    shown = _redacted(url)
    deadline = time.monotonic() + 4 * settings.download_timeout_s
    with requests.Session() as session:
        for attempt in range(settings.download_retries + 1):
            try:
                _download_once(session, url, dest, field, settings, deadline)
                return
            except _Retryable as exc:
                last = str(exc)
                pause = min(0.5 * 2**attempt, 8.0)
                if attempt == settings.download_retries or time.monotonic() + pause > deadline:
                    break
                log.warning("%s: download of %s failed (%s), retrying in %.1f s", field, shown, last, pause)
                time.sleep(pause)
    raise InputError(f"{field}: could not download {shown}: {last}")


def _download_once(
    session: requests.Session, url: str, dest: Path, field: str, settings: Settings, deadline: float
) -> None:
    for _ in range(_MAX_REDIRECTS + 1):
        check_url(url, field, settings)
        try:
            response = session.get(url, stream=True, allow_redirects=False, timeout=settings.download_timeout_s)
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise _Retryable(f"{type(exc).__name__}") from None
        with response:
            if response.is_redirect:
                url = urljoin(url, response.headers["Location"])
                continue
            if response.status_code == 429 or response.status_code >= 500:
                raise _Retryable(f"HTTP {response.status_code}")
            if response.status_code >= 400:
                raise InputError(f"{field}: download of {_redacted(url)} failed with HTTP {response.status_code}")
            _stream_to(response, dest, field, settings, deadline)
            return
    raise InputError(f"{field}: more than {_MAX_REDIRECTS} redirects")


def _stream_to(response: requests.Response, dest: Path, field: str, settings: Settings, deadline: float) -> None:
    cap = settings.max_download_bytes
    declared = response.headers.get("Content-Length")
    if declared is not None and declared.isdigit() and int(declared) > cap:
        raise InputError(f"{field}: the file is {declared} bytes, over the limit of {cap}")
    received = 0
    try:
        with open(dest, "wb") as f:
            for chunk in response.iter_content(_CHUNK):
                received += len(chunk)
                if received > cap:
                    raise InputError(f"{field}: the download exceeds the limit of {cap} bytes")
                if time.monotonic() > deadline:
                    raise InputError(f"{field}: the download took longer than {4 * settings.download_timeout_s:.0f} s")
                f.write(chunk)
    except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
        raise _Retryable(f"connection lost after {received} bytes ({type(exc).__name__})") from None
    if received == 0:
        raise InputError(f"{field}: the download is empty")


def check_url(url: str, field: str, settings: Settings) -> None:
    """InputError unless `url` is http(s) with a host that resolves only to public addresses (or those are allowed)."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        raise InputError(f"{field}: {_redacted(url)} has an invalid port") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise InputError(f"{field}: {_redacted(url)} is not an http(s) URL with a host")
    if settings.allow_private_urls:
        return
    try:
        infos = socket.getaddrinfo(parts.hostname, port or None, proto=socket.IPPROTO_TCP)
    except socket.gaierror as exc:
        raise InputError(f"{field}: cannot resolve host {parts.hostname!r} ({exc.strerror})") from None
    for info in infos:
        address = ipaddress.ip_address(info[4][0].split("%")[0])
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        if not address.is_global or address.is_multicast:
            raise InputError(
                f"{field}: host {parts.hostname!r} resolves to {address}, a private, loopback, link-local or "
                "reserved address; refused (SCAIL_ALLOW_PRIVATE_URLS=1 allows it)"
            )


def _redacted(url: str) -> str:
    """The URL without query and credentials (presigned URLs carry secrets in the query)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"
