"""Inputs from URLs (SSRF guard, limits, retries, redirects), base64 / data URIs and model-root paths."""

from __future__ import annotations

import base64
import os

import pytest

from common.errors import InputError
from worker import inputs
from worker.inputs import check_url, fetch_input, sniff


@pytest.fixture
def png_bytes(demo_media):
    return demo_media.reference.read_bytes()


@pytest.fixture
def mp4_bytes(demo_media):
    return demo_media.driving_video.read_bytes()


# --- content sniffing -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("head", "kind", "fmt"),
    [
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 8, "image", "png"),
        (b"\xff\xd8\xff\xe0" + b"\0" * 8, "image", "jpeg"),
        (b"RIFF\0\0\0\0WEBPVP8 ", "image", "webp"),
        (b"\0\0\0\x20ftypisom\0\0\0\0", "video", "mp4"),
        (b"\0\0\0\x20ftypavif\0\0\0\0", "image", "heif"),
        (b"\x1a\x45\xdf\xa3\0\0\0\0", "video", "webm"),
        (b"GIF89a\0\0", "image", "gif"),
    ],
)
def test_sniff_recognises_the_format_from_its_first_bytes(head, kind, fmt):
    found = sniff(head)
    assert (found.kind, found.format) == (kind, fmt)


def test_sniff_rejects_text():
    assert sniff(b"<html><body>hello</body></html>") is None


# --- model-root paths -------------------------------------------------------------------------------


def test_volume_path_is_used_in_place(make_settings, tmp_path, png_bytes):
    settings = make_settings()
    (settings.model_root / "demo").mkdir()
    (settings.model_root / "demo" / "ref.png").write_bytes(png_bytes)
    path = fetch_input("demo/ref.png", "reference_image", "image", tmp_path, settings)
    assert path == (settings.model_root / "demo" / "ref.png").resolve()


def test_volume_path_with_dot_dot_outside_the_root_is_refused(make_settings, tmp_path, png_bytes):
    settings = make_settings()
    (tmp_path / "secret.png").write_bytes(png_bytes)
    with pytest.raises(InputError, match="reference_image: path '../secret.png' is outside the model root"):
        fetch_input("../secret.png", "reference_image", "image", tmp_path, settings)


def test_absolute_path_outside_the_root_is_refused(make_settings, tmp_path):
    with pytest.raises(InputError, match="outside the model root"):
        fetch_input("/etc/passwd", "reference_image", "image", tmp_path, make_settings())


def test_symlink_leaving_the_root_is_refused(make_settings, tmp_path, png_bytes):
    settings = make_settings()
    (tmp_path / "outside.png").write_bytes(png_bytes)
    os.symlink(tmp_path / "outside.png", settings.model_root / "link.png")
    with pytest.raises(InputError, match="outside the model root"):
        fetch_input("link.png", "reference_image", "image", tmp_path, settings)


def test_missing_volume_file_is_named(make_settings, tmp_path):
    with pytest.raises(InputError, match="pose_video: file 'demo/nothing.mp4' not found in the model root"):
        fetch_input("demo/nothing.mp4", "pose_video", "video", tmp_path, make_settings())


def test_image_given_where_a_video_is_expected_is_refused(make_settings, tmp_path, png_bytes):
    settings = make_settings()
    (settings.model_root / "ref.png").write_bytes(png_bytes)
    with pytest.raises(InputError, match="pose_video: expected a video, got png"):
        fetch_input("ref.png", "pose_video", "video", tmp_path, settings)


# --- base64 and data URIs ---------------------------------------------------------------------------


def test_plain_base64_is_decoded(make_settings, tmp_path, png_bytes):
    path = fetch_input(base64.b64encode(png_bytes).decode(), "reference_image", "image", tmp_path, make_settings())
    assert path.read_bytes() == png_bytes


def test_data_uri_is_decoded(make_settings, tmp_path, mp4_bytes):
    uri = "data:video/mp4;base64," + base64.b64encode(mp4_bytes).decode()
    path = fetch_input(uri, "pose_video", "video", tmp_path, make_settings())
    assert path.read_bytes() == mp4_bytes


def test_data_uri_without_base64_is_refused(make_settings, tmp_path):
    with pytest.raises(InputError, match="malformed data URI"):
        fetch_input("data:image/png,abc", "reference_image", "image", tmp_path, make_settings())


def test_base64_over_the_size_cap_is_refused_before_decoding(make_settings, tmp_path, png_bytes):
    settings = make_settings(max_download_bytes=100)
    with pytest.raises(InputError, match="over the limit of 100 bytes"):
        fetch_input(base64.b64encode(png_bytes).decode(), "reference_image", "image", tmp_path, settings)


def test_base64_of_text_is_refused_by_content(make_settings, tmp_path):
    text = base64.b64encode(b"just some text, not an image at all, long enough to look like base64 data").decode()
    with pytest.raises(InputError, match="neither a known image nor a video"):
        fetch_input(text, "reference_image", "image", tmp_path, make_settings())


def test_unsupported_url_scheme_is_refused(make_settings, tmp_path):
    with pytest.raises(InputError, match="URL scheme 'file' is not supported"):
        fetch_input("file:///etc/passwd", "reference_image", "image", tmp_path, make_settings())


# --- URLs: SSRF guard -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/x.png",
        "http://localhost:8080/x.png",
        "http://10.1.2.3/x.png",
        "http://192.168.0.10/x.png",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/x.png",
        "http://[::ffff:127.0.0.1]/x.png",
        "http://0.0.0.0/x.png",
        "http://100.64.0.1/x.png",
    ],
)
def test_private_loopback_and_link_local_hosts_are_refused(make_settings, url):
    with pytest.raises(InputError, match="private, loopback, link-local or reserved address; refused"):
        check_url(url, "reference_image", make_settings())


def test_public_address_passes_the_guard(make_settings):
    check_url("https://93.184.216.34/x.png", "reference_image", make_settings())


def test_loopback_url_is_refused_end_to_end_by_default(make_settings, tmp_path, http_server, png_bytes):
    http_server.routes["/ref.png"] = (200, {}, png_bytes)
    with pytest.raises(InputError, match="refused"):
        fetch_input(http_server.url + "/ref.png", "reference_image", "image", tmp_path, make_settings())
    assert http_server.hits == []


# --- URLs: downloads (loopback allowed explicitly) --------------------------------------------------


@pytest.fixture
def lan_settings(make_settings):
    return make_settings(allow_private_urls=True, download_retries=2, download_timeout_s=5.0)


def test_url_is_downloaded(lan_settings, tmp_path, http_server, png_bytes):
    http_server.routes["/ref.png?sig=secret"] = (200, {"Content-Type": "application/octet-stream"}, png_bytes)
    path = fetch_input(http_server.url + "/ref.png?sig=secret", "reference_image", "image", tmp_path, lan_settings)
    assert path.read_bytes() == png_bytes


def test_every_redirect_hop_is_checked(lan_settings, tmp_path, http_server, png_bytes, monkeypatch):
    http_server.routes["/a"] = (302, {"Location": "/b"}, b"")
    http_server.routes["/b"] = (301, {"Location": http_server.url + "/ref.png"}, b"")
    http_server.routes["/ref.png"] = (200, {}, png_bytes)
    checked = []
    real_check = inputs.check_url
    monkeypatch.setattr(inputs, "check_url", lambda url, *rest: (checked.append(url), real_check(url, *rest)))
    fetch_input(http_server.url + "/a", "reference_image", "image", tmp_path, lan_settings)
    assert checked == [http_server.url + "/a", http_server.url + "/b", http_server.url + "/ref.png"]


def test_redirect_to_a_private_host_is_refused(make_settings, tmp_path, http_server, monkeypatch):
    http_server.routes["/a"] = (302, {"Location": "http://10.0.0.1/x.png"}, b"")
    guarded = make_settings()
    real_check = inputs.check_url
    # The first hop (the loopback test server) is let through; the guard must still stop the second.
    monkeypatch.setattr(
        inputs, "check_url", lambda url, field, s: None if url.startswith(http_server.url) else real_check(url, field, s)
    )
    with pytest.raises(InputError, match="10.0.0.1.*refused"):
        fetch_input(http_server.url + "/a", "reference_image", "image", tmp_path, guarded)


def test_declared_size_over_the_cap_is_refused(make_settings, tmp_path, http_server, png_bytes):
    settings = make_settings(allow_private_urls=True, max_download_bytes=len(png_bytes) - 1)
    http_server.routes["/ref.png"] = (200, {}, png_bytes)
    with pytest.raises(InputError, match=f"the file is {len(png_bytes)} bytes, over the limit"):
        fetch_input(http_server.url + "/ref.png", "reference_image", "image", tmp_path, settings)


def test_streamed_size_over_the_cap_is_refused(make_settings, tmp_path, http_server, png_bytes):
    settings = make_settings(allow_private_urls=True, max_download_bytes=len(png_bytes) - 1)
    # Without a Content-Length header only the byte count while streaming can stop it.
    http_server.routes["/big.png"] = (200, {"Content-Length": None}, png_bytes)
    with pytest.raises(InputError, match="exceeds the limit"):
        fetch_input(http_server.url + "/big.png", "reference_image", "image", tmp_path, settings)


def test_server_error_is_retried(lan_settings, tmp_path, http_server, png_bytes):
    answers = iter([(503, {}, b"busy"), (200, {}, png_bytes)])
    http_server.routes["/ref.png"] = lambda: next(answers)
    path = fetch_input(http_server.url + "/ref.png", "reference_image", "image", tmp_path, lan_settings)
    assert path.read_bytes() == png_bytes
    assert http_server.hits == ["/ref.png", "/ref.png"]


def test_client_error_is_not_retried_and_names_the_status(lan_settings, tmp_path, http_server):
    with pytest.raises(InputError, match=r"reference_image: download of http://127\.0\.0\.1:\d+/gone\.png failed with HTTP 404"):
        fetch_input(http_server.url + "/gone.png", "reference_image", "image", tmp_path, lan_settings)
    assert http_server.hits == ["/gone.png"]


def test_persistent_server_error_gives_up_after_the_retries(make_settings, tmp_path, http_server):
    settings = make_settings(allow_private_urls=True, download_retries=1)
    http_server.routes["/ref.png"] = (500, {}, b"oops")
    with pytest.raises(InputError, match="could not download .*HTTP 500"):
        fetch_input(http_server.url + "/ref.png", "reference_image", "image", tmp_path, settings)
    assert len(http_server.hits) == 2


def test_error_messages_leave_out_the_query_string(lan_settings, tmp_path, http_server):
    with pytest.raises(InputError) as info:
        fetch_input(http_server.url + "/x.png?X-Amz-Signature=topsecret", "reference_image", "image", tmp_path, lan_settings)
    assert "topsecret" not in str(info.value)


def test_jpeg_base64_starting_with_a_slash_is_not_taken_for_a_path(make_settings, tmp_path, demo_media):
    from PIL import Image

    Image.open(demo_media.reference).convert("RGB").save(tmp_path / "ref.jpg")
    encoded = base64.b64encode((tmp_path / "ref.jpg").read_bytes()).decode()
    assert encoded.startswith("/9j/")
    path = fetch_input(encoded, "reference_image", "image", tmp_path, make_settings())
    assert path.read_bytes() == (tmp_path / "ref.jpg").read_bytes()


def test_volume_file_over_the_size_cap_is_refused(make_settings, tmp_path, png_bytes):
    settings = make_settings(max_download_bytes=10)
    (settings.model_root / "ref.png").write_bytes(png_bytes)
    with pytest.raises(InputError, match="reference_image: file is .* bytes, over the limit of 10"):
        fetch_input("ref.png", "reference_image", "image", tmp_path, settings)
