"""Uploads made by an attacker, not a camera: bombs, lies about size, truncations, polyglots,
odd modes and names, and malformed multipart. Every file is made here. Each answer is 202
(and its task completes, or fails at once with a clear error), 413 or 415: never a 500, never
a file outside MEDIA_DIR, never a worker that dies."""

import asyncio
import io
import struct
import zipfile
import zlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from arq.worker import Worker
from PIL import Image

from {{ cookiecutter.__package_name }}.settings import Settings

MEDIA = "/api/v1/media"
BOUNDARY = "hostile-boundary-7f3a"


@pytest.fixture
def settings(settings: Settings, tmp_path: Path) -> Settings:
    limits = {"media_max_upload_bytes": 1_000_000, "media_max_pixels": 4_000_000}
    return settings.model_copy(update={"media_dir": tmp_path / "media", **limits})


def encoded(image: Image.Image, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def picture(size: tuple[int, int], mode: str = "RGB") -> Image.Image:
    """An image with some detail, so that encoders have work to do."""
    return Image.linear_gradient("L").resize(size).convert(mode)


def png_declaring(width: int, height: int) -> bytes:
    """A 1x1 PNG whose header claims `width` x `height` (its checksum rewritten to match)."""
    data = bytearray(encoded(picture((1, 1)), "PNG"))
    struct.pack_into(">II", data, 16, width, height)
    struct.pack_into(">I", data, 29, zlib.crc32(data[12:29]))
    return bytes(data)


def gif_declaring(width: int, height: int) -> bytes:
    """A 1x1 GIF whose logical screen claims `width` x `height`."""
    data = bytearray(encoded(picture((1, 1), "P"), "GIF"))
    struct.pack_into("<HH", data, 6, width, height)
    return bytes(data)


def webp_declaring(width: int, height: int) -> bytes:
    """A 1x1 lossless WebP whose header claims `width` x `height` (at most 16384 each)."""
    data = bytearray(encoded(picture((1, 1)), "WEBP", lossless=True))
    assert data[12:16] == b"VP8L"
    bits = struct.unpack_from("<I", data, 21)[0]
    bits = (bits & ~0x0FFF_FFFF) | (width - 1) | ((height - 1) << 14)
    struct.pack_into("<I", data, 21, bits)
    return bytes(data)


def animated(fmt: str, frames: int) -> bytes:
    images = [picture((32, 32)).rotate(index) for index in range(frames)]
    return encoded(images[0], fmt, save_all=True, append_images=images[1:], duration=10)


def rotated_jpeg() -> bytes:
    """120x80 pixels whose EXIF orientation (6) says: turn me upright, 80x120."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return encoded(picture((120, 80)), "JPEG", exif=exif)


def palette_with_transparency() -> bytes:
    image = picture((64, 64), "P")
    return encoded(image, "PNG", transparency=0)


def zip_file() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("payload.txt", "not an image")
    return buffer.getvalue()


def truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


SVG = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'
HTML = b"<!doctype html><html><body><script>alert(1)</script></body></html>"
# What the service answers each file, and how its task ends: "complete", or the start of the
# error of a task that failed at once. Named as the closing note of the change lists them.
CORPUS: dict[str, tuple[Callable[[], bytes], int, str]] = {
    "png bomb": (lambda: png_declaring(30_000, 30_000), 413, "too large"),
    "gif bomb": (lambda: gif_declaring(65_535, 65_535), 413, "too large"),
    "webp bomb": (lambda: webp_declaring(16_384, 16_384), 413, "too large"),
    "tiny png declaring 2,100x2,100": (lambda: png_declaring(2_100, 2_100), 413, "2100x2100"),
    "tiny png declaring 1,900x2,000": (
        lambda: png_declaring(1_900, 2_000),
        202,
        "NonRetryableError: The image cannot be decoded",
    ),
    "truncated jpeg": (
        lambda: truncated(encoded(picture((400, 300)), "JPEG")),
        202,
        "NonRetryableError: The image cannot be decoded",
    ),
    "truncated png": (
        lambda: truncated(encoded(picture((400, 300)), "PNG")),
        202,
        "NonRetryableError: The image cannot be decoded",
    ),
    "truncated webp": (
        lambda: truncated(encoded(picture((400, 300)), "WEBP")),
        415,
        "not an image",
    ),
    "svg as png": (lambda: SVG, 415, "not an image"),
    "html as png": (lambda: HTML, 415, "not an image"),
    "zip as png": (lambda: zip_file(), 415, "not an image"),
    "png with a zip appended": (
        lambda: encoded(picture((64, 64)), "PNG") + zip_file(),
        202,
        "complete",
    ),
    "animated png, 300 frames": (lambda: animated("PNG", 300), 202, "complete"),
    "animated webp, 300 frames": (lambda: animated("WEBP", 300), 202, "complete"),
    "animated gif": (lambda: animated("GIF", 30), 415, "GIF images are not accepted"),
    "cmyk jpeg": (lambda: encoded(picture((64, 64), "CMYK"), "JPEG"), 202, "complete"),
    "16-bit png": (lambda: encoded(picture((64, 64), "I;16"), "PNG"), 202, "complete"),
    "palette png with transparency": (palette_with_transparency, 202, "complete"),
    "jpeg with exif orientation": (rotated_jpeg, 202, "complete"),
    "zero bytes": (lambda: b"", 415, "not an image"),
}


def multipart(parts: list[tuple[bytes, bytes | None, bytes]]) -> bytes:
    """A multipart body from (field name, filename or None, content), bytes as given: names
    may hold what no client library would send."""
    body = b""
    for name, filename, content in parts:
        disposition = b'form-data; name="' + name + b'"'
        if filename is not None:
            disposition += b'; filename="' + filename + b'"'
        body += b"--" + BOUNDARY.encode() + b"\r\nContent-Disposition: " + disposition
        body += b"\r\nContent-Type: image/png\r\n\r\n" + content + b"\r\n"
    return body + b"--" + BOUNDARY.encode() + b"--\r\n"


async def post_multipart(client: httpx.AsyncClient, body: bytes | Any) -> httpx.Response:
    headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    return await client.post(MEDIA, content=body, headers=headers)


def files_under(root: Path) -> list[Path]:
    return [path for path in root.rglob("*") if path.is_file()]


async def assert_task_ends(
    client: httpx.AsyncClient, worker: Worker, reply: httpx.Response, outcome: str
) -> dict[str, Any]:
    """The worker runs the upload's task and lives on; the task ends as `outcome` says."""
    await worker.main()
    state: dict[str, Any] = (await client.get(reply.json()["status_url"])).json()
    if outcome == "complete":
        assert state["status"] == "complete", state
    else:
        assert (state["status"], state["tries"]) == ("failed", 1), state
        assert state["error"].startswith(outcome), state
    return state


@pytest.mark.parametrize("case", sorted(CORPUS))
async def test_each_hostile_file_gets_202_413_or_415(
    client: httpx.AsyncClient,
    make_worker: Callable[..., Worker],
    settings: Settings,
    tmp_path: Path,
    case: str,
) -> None:
    make, status, expected = CORPUS[case]
    reply = await client.post(MEDIA, files={"file": ("photo.png", make(), "image/png")})
    assert reply.status_code == status, reply.text
    if status == 202:
        state = await assert_task_ends(client, make_worker(), reply, expected)
        if case == "jpeg with exif orientation":  # turned upright first
            thumbnail = state["result"]["thumbnail"]
            assert (thumbnail["width"], thumbnail["height"]) == (80, 120)
    else:
        assert expected in reply.json()["detail"]
        assert not settings.media_dir.exists() or files_under(settings.media_dir) == []
    # Whatever was written is in an upload's folder of MEDIA_DIR.
    assert {path.parent.parent for path in files_under(tmp_path)} <= {settings.media_dir}


@pytest.mark.parametrize(
    "filename",
    [b"../../../escaped.png", b"nul\x00byte.png", b"x" * 300 + b".png", b"\xff\xfe\xc3(.png"],
    ids=["dot-dot", "nul", "300-characters", "not-utf-8"],
)
async def test_the_client_s_filename_is_never_used(
    client: httpx.AsyncClient,
    make_worker: Callable[..., Worker],
    settings: Settings,
    tmp_path: Path,
    filename: bytes,
) -> None:
    body = multipart([(b"file", filename, encoded(picture((64, 64)), "PNG"))])
    reply = await post_multipart(client, body)
    assert reply.status_code == 202, reply.text
    await assert_task_ends(client, make_worker(), reply, "complete")
    media_id = reply.json()["media_id"]
    stored = {path.relative_to(settings.media_dir).as_posix() for path in files_under(tmp_path)}
    assert stored == {
        f"{media_id}/original",
        f"{media_id}/owner",
        f"{media_id}/thumbnail.jpg",
        f"{media_id}/optimized.png",
    }


async def slow_parts(size: int, chunk: int = 64 * 1024) -> AsyncIterator[bytes]:
    """A file part of `size` bytes, sent a chunk at a time with pauses, as a slow client."""
    yield (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="big.png"'
        "\r\nContent-Type: image/png\r\n\r\n"
    ).encode()
    for _ in range(size // chunk):
        await asyncio.sleep(0.001)
        yield b"\0" * chunk
    yield f"\r\n--{BOUNDARY}--\r\n".encode()


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        (multipart([(b"other", None, b"x")]), 422, "Field required"),
        (multipart([(b"upload", b"photo.png", b"\x89PNG")]), 422, "Field required"),
        (
            multipart([(b"file", b"a.png", b"\x89PNG"), (b"file", b"b.png", b"\x89PNG")]),
            422,
            "one file",
        ),
        (b"--not-the-boundary\r\n\r\n", 400, "Invalid multipart data"),
    ],
    ids=["no-file-part", "wrong-field-name", "two-file-parts", "no-boundary-in-body"],
)
async def test_malformed_multipart_gets_a_clear_4xx(
    client: httpx.AsyncClient, settings: Settings, body: bytes, status: int, detail: str
) -> None:
    reply = await post_multipart(client, body)
    assert reply.status_code == status, reply.text
    assert detail in str(reply.json()["detail"])
    assert not settings.media_dir.exists() or files_under(settings.media_dir) == []


async def test_a_missing_boundary_and_a_slow_oversized_part_are_refused(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    no_boundary = await client.post(
        MEDIA, content=b"whatever", headers={"Content-Type": "multipart/form-data"}
    )
    assert no_boundary.status_code == 400, no_boundary.text
    assert no_boundary.json()["detail"]
    too_big = await post_multipart(client, slow_parts(settings.media_max_upload_bytes * 2))
    assert too_big.status_code == 413, too_big.text
    assert too_big.json()["detail"]
    assert not settings.media_dir.exists() or files_under(settings.media_dir) == []
