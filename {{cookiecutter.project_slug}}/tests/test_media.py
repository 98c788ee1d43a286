"""The media example: uploads over HTTP, processed by a real worker with Pillow, on images the
tests make; bad files get a clear 4xx, or a failed task that is not retried."""

import struct
import zlib
from collections.abc import Callable
from io import BytesIO
from pathlib import Path
from typing import Any

import httpx
import pytest
from arq.worker import Worker
from PIL import Image

from {{ cookiecutter.__package_name }}.access import create_key
from {{ cookiecutter.__package_name }}.infrastructure.queue import TaskQueue
from {{ cookiecutter.__package_name }}.main import create_app
from {{ cookiecutter.__package_name }}.settings import Settings

from .support import TEST_API_KEY, serve


@pytest.fixture
def settings(settings: Settings, tmp_path: Path) -> Settings:
    limits = {"media_max_upload_bytes": 1_000_000, "media_max_pixels": 4_000_000}
    return settings.model_copy(update={"media_dir": tmp_path / "media", **limits})


def image_bytes(fmt: str, size: tuple[int, int], mode: str = "RGB") -> bytes:
    image = Image.new(mode, size)
    for x in range(0, size[0], 7):  # some detail, so that encoders have work to do
        for y in range(0, size[1], 5):
            image.putpixel(
                (x, y), (x % 256, y % 256, (x * y) % 256) + ((200,) if mode == "RGBA" else ())
            )
    buffer = BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def png_declaring(width: int, height: int) -> bytes:
    """A tiny valid PNG whose header claims `width` x `height` pixels (a decompression bomb's
    first step): the IHDR chunk's size fields are rewritten, and its checksum with them."""
    data = bytearray(image_bytes("PNG", (1, 1)))
    struct.pack_into(">II", data, 16, width, height)  # after the signature, length and "IHDR"
    struct.pack_into(">I", data, 29, zlib.crc32(data[12:29]))
    return bytes(data)


async def upload(client: httpx.AsyncClient, data: bytes, name: str = "photo") -> httpx.Response:
    return await client.post("/api/v1/media", files={"file": (name, data)})


async def run_task(client: httpx.AsyncClient, worker: Worker, url: str) -> dict[str, Any]:
    await worker.main()
    state: dict[str, Any] = (await client.get(url)).json()
    return state


async def test_an_upload_is_queued_then_thumbnailed_and_optimized(
    client: httpx.AsyncClient, make_worker: Callable[..., Worker], settings: Settings
) -> None:
    reply = await upload(client, image_bytes("JPEG", (1200, 800)))
    assert reply.status_code == 202, reply.text
    accepted = reply.json()
    assert accepted["status"] == "queued"
    assert (accepted["format"], accepted["width"], accepted["height"]) == ("JPEG", 1200, 800)
    assert reply.headers["Location"] == accepted["status_url"]
    # The media id is the task id its uploader chose: the task's id is the uploader's tag, then it.
    assert accepted["task_id"] == TEST_API_KEY.principal.task_id(accepted["media_id"])

    state = await run_task(client, make_worker(), accepted["status_url"])
    assert state["status"] == "complete", state
    assert state["progress"] == 100
    result = state["result"]
    folder = settings.media_dir / accepted["media_id"]
    with Image.open(folder / result["thumbnail"]["file"]) as thumbnail:
        assert thumbnail.size == (300, 200)  # within 300x300, aspect ratio kept
        assert thumbnail.format == "JPEG"
    with Image.open(folder / result["optimized"]["file"]) as optimized:
        assert optimized.size == (1200, 800)
        assert optimized.format == "JPEG"
    assert result["optimized"]["bytes"] <= result["optimized"]["original_bytes"]


async def test_a_transparent_png_keeps_its_transparency(
    client: httpx.AsyncClient, make_worker: Callable[..., Worker], settings: Settings
) -> None:
    reply = await upload(client, image_bytes("PNG", (200, 600), mode="RGBA"))
    state = await run_task(client, make_worker(), reply.json()["status_url"])
    assert state["status"] == "complete", state
    thumbnail = settings.media_dir / reply.json()["media_id"] / state["result"]["thumbnail"]["file"]
    with Image.open(thumbnail) as image:
        assert (image.format, image.size, image.mode) == ("PNG", (100, 300), "RGBA")


@pytest.mark.parametrize(
    ("data", "status", "detail"),
    [
        (b"plain text, not an image", 415, "not an image"),
        (image_bytes("GIF", (10, 10), mode="P"), 415, "GIF images are not accepted"),
        (image_bytes("PNG", (3000, 3000)), 413, "at most 4,000,000 pixels"),
        (b"\xff\xd8" + b"0" * 1_000_000, 413, "larger than 1,000,000 bytes"),
        # Past Pillow's own limits: a warning above MAX_IMAGE_PIXELS, an error above twice that.
        (png_declaring(10_000, 10_000), 413, "The image is 10000x10000 pixels"),
        (png_declaring(30_000, 30_000), 413, "too large: at most 4,000,000 pixels"),
    ],
    ids=["not-an-image", "gif", "too-many-pixels", "too-many-bytes", "bomb-warning", "bomb-error"],
)
async def test_bad_files_get_a_clear_4xx_and_leave_nothing(
    client: httpx.AsyncClient,
    settings: Settings,
    task_queue: TaskQueue,
    data: bytes,
    status: int,
    detail: str,
) -> None:
    reply = await upload(client, data)
    assert reply.status_code == status, reply.text
    assert detail in reply.json()["detail"]
    assert not settings.media_dir.exists() or not any(settings.media_dir.iterdir())
    assert (await task_queue.metrics()).depths[settings.task_queue] == 0


async def test_a_missing_file_field_is_a_422(client: httpx.AsyncClient) -> None:
    reply = await client.post("/api/v1/media", data={"other": "x"})
    assert reply.status_code == 422
    assert reply.json()["detail"][0]["loc"] == ["body", "file"]


async def test_a_truncated_image_fails_once_with_a_clear_error(
    client: httpx.AsyncClient, make_worker: Callable[..., Worker]
) -> None:
    """Its header passes the upload's check; decoding fails in the worker, without retries."""
    data = image_bytes("JPEG", (800, 600))
    reply = await upload(client, data[: len(data) // 2])
    assert reply.status_code == 202
    state = await run_task(client, make_worker(), reply.json()["status_url"])
    assert state["status"] == "failed"
    assert state["tries"] == 1
    assert state["error"].startswith("NonRetryableError: The image cannot be decoded")


async def test_media_ids_cannot_leave_the_media_folder(client: httpx.AsyncClient) -> None:
    body = {"name": "generate_thumbnail", "args": {"media_id": "../../etc/passwd"}}
    reply = await client.post("/api/v1/tasks", json=body)
    assert reply.status_code == 422
    assert reply.json()["detail"][0]["loc"] == ["body", "args", "media_id"]


async def test_each_task_runs_alone_on_an_upload(
    client: httpx.AsyncClient, make_worker: Callable[..., Worker], settings: Settings
) -> None:
    media_id = (await upload(client, image_bytes("WEBP", (640, 480)))).json()["media_id"]
    await make_worker().main()
    for name, produced in (
        ("generate_thumbnail", "thumbnail.jpg"),
        ("optimize_image", "optimized.webp"),
    ):
        body = {"name": name, "args": {"media_id": media_id}}
        url = (await client.post("/api/v1/tasks", json=body)).headers["Location"]
        state = await run_task(client, make_worker(), url)
        assert state["status"] == "complete", state
        assert state["result"]["file"] == produced
        assert (settings.media_dir / media_id / produced).is_file()


async def test_the_uploader_reads_the_thumbnail_and_the_optimized_copy(
    client: httpx.AsyncClient, make_worker: Callable[..., Worker], settings: Settings
) -> None:
    (own_key, own_entry), (other_key, other_entry) = (
        create_key(name, ["tasks:submit"]) for name in ("uploader", "other")
    )
    app = create_app(settings.model_copy(update={"api_keys": [own_entry, other_entry]}))
    async with serve(app, key=own_key) as own:
        accepted = (await upload(own, image_bytes("PNG", (900, 300)))).json()
        thumbnail_url = f"/api/v1/media/{accepted['media_id']}/thumbnail"
        not_yet = await own.get(thumbnail_url)
        assert not_yet.status_code == 404
        assert "has no thumbnail yet" in not_yet.json()["detail"]

        await make_worker().main()
        thumbnail = await own.get(thumbnail_url)
        assert thumbnail.status_code == 200, thumbnail.text
        assert thumbnail.headers["content-type"] == "image/jpeg"
        with Image.open(BytesIO(thumbnail.content)) as image:
            assert image.size == (300, 100)
        optimized = await own.get(f"/api/v1/media/{accepted['media_id']}/optimized")
        assert optimized.headers["content-type"] == "image/png"
        for url, status in (
            (f"/api/v1/media/{accepted['media_id']}/original", 422),
            ("/api/v1/media/..%2F..%2Fetc/thumbnail", 404),
            (f"/api/v1/media/{'0' * 32}/thumbnail", 404),
        ):
            assert (await own.get(url)).status_code == status, url
    async with serve(app, key=other_key) as theirs:
        assert (await theirs.get(thumbnail_url)).status_code == 404
    async with serve(app, key=None) as anonymous:
        assert (await anonymous.get(thumbnail_url)).status_code == 401
    # An operator (the tests' own key) reads every upload.
    assert (await client.get(thumbnail_url)).status_code == 200
