"""The media example: a thumbnail and an optimized copy of an uploaded image, with Pillow.

Decoding and encoding are CPU work: they run in a thread, so that the worker's event loop keeps
serving its other tasks and its heartbeat. A file that cannot be decoded fails its task at once
(NonRetryableError): retrying a broken file cannot help.
"""

import asyncio
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict, Field

from ..infrastructure.media import MEDIA_ID_PATTERN, ORIGINAL, MediaNotFoundError, MediaStore
from ..infrastructure.queue import NonRetryableError, report_progress
from ..settings import Settings

THUMBNAIL_SIZE = (300, 300)
EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}
SAVE_OPTIONS: dict[str, dict[str, Any]] = {
    "JPEG": {"quality": 85, "optimize": True, "progressive": True},
    "PNG": {"optimize": True},
    "WEBP": {"quality": 80, "method": 6},
}


class MediaArgs(BaseModel):
    """What `POST /api/v1/tasks` accepts as `args` for the media tasks."""

    model_config = ConfigDict(extra="forbid")

    media_id: str = Field(pattern=MEDIA_ID_PATTERN, description="From POST /api/v1/media")


def upload_folder(ctx: dict[str, Any], media_id: str) -> Path:
    settings: Settings = ctx["settings"]
    try:
        return MediaStore(settings.media_dir).folder(media_id)
    except MediaNotFoundError as exc:
        raise NonRetryableError(str(exc)) from exc


def load_original(folder: Path) -> Image.Image:
    """The upload, decoded, upright as its EXIF orientation says."""
    try:
        with Image.open(folder / ORIGINAL) as image:
            image.load()
            upright = ImageOps.exif_transpose(image)
            upright.format = image.format
            return upright
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError) as exc:
        raise NonRetryableError(f"The image cannot be decoded: {exc}") from exc


def make_thumbnail(folder: Path) -> dict[str, Any]:
    """At most 300x300, aspect ratio kept: PNG when the image has transparency, else JPEG."""
    image = load_original(folder)
    image.thumbnail(THUMBNAIL_SIZE)
    transparent = image.has_transparency_data
    name = "thumbnail.png" if transparent else "thumbnail.jpg"
    if not transparent and image.mode != "RGB":
        image = image.convert("RGB")
    image.save(folder / name, **SAVE_OPTIONS["PNG" if transparent else "JPEG"])
    return {"file": name, "width": image.width, "height": image.height}


def make_optimized(folder: Path) -> dict[str, Any]:
    """The same format re-encoded for size; the original bytes when that is not smaller."""
    image = load_original(folder)
    fmt = image.format if image.format in SAVE_OPTIONS else "PNG"
    target = folder / f"optimized.{EXTENSIONS[fmt]}"
    image.save(target, format=fmt, **SAVE_OPTIONS[fmt])
    original_bytes = (folder / ORIGINAL).stat().st_size
    if target.stat().st_size >= original_bytes:
        target.write_bytes((folder / ORIGINAL).read_bytes())
    return {
        "file": target.name,
        "bytes": target.stat().st_size,
        "original_bytes": original_bytes,
    }


async def generate_thumbnail(ctx: dict[str, Any], media_id: str) -> dict[str, Any]:
    """Write the upload's 300x300 thumbnail beside it."""
    return await asyncio.to_thread(make_thumbnail, upload_folder(ctx, media_id))


async def optimize_image(ctx: dict[str, Any], media_id: str) -> dict[str, Any]:
    """Write a smaller copy of the upload beside it."""
    return await asyncio.to_thread(make_optimized, upload_folder(ctx, media_id))


async def process_media(ctx: dict[str, Any], media_id: str) -> dict[str, Any]:
    """Thumbnail, then optimized copy, reporting progress after each."""
    folder = upload_folder(ctx, media_id)
    thumbnail = await asyncio.to_thread(make_thumbnail, folder)
    await report_progress(ctx, 50, event="thumbnail", data=thumbnail)
    optimized = await asyncio.to_thread(make_optimized, folder)
    await report_progress(ctx, 100, event="optimized", data=optimized)
    return {"media_id": media_id, "thumbnail": thumbnail, "optimized": optimized}
