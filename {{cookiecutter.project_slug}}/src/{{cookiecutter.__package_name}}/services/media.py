"""The media example's uploads: checked, stored, and handed to `process_media`."""

import asyncio
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..access import Principal
from ..infrastructure.media import MediaStore, identify
from ..settings import Settings
from .tasks import Submitted, TaskService


class UploadTooLargeError(ValueError):
    def __init__(self, max_bytes: int) -> None:
        super().__init__(f"The file is larger than {max_bytes:,} bytes.")


@dataclass(frozen=True)
class Upload:
    media_id: str
    task: Submitted
    format: str
    width: int
    height: int


class MediaService:
    def __init__(self, tasks: TaskService, settings: Settings) -> None:
        self._tasks = tasks
        self._settings = settings

    async def upload(self, principal: Principal, data: bytes) -> Upload:
        """Refuse what is not an accepted image (nothing is stored then); store the rest and
        queue `process_media` for `principal`, with the media id as its chosen task id."""
        if len(data) > self._settings.media_max_upload_bytes:
            raise UploadTooLargeError(self._settings.media_max_upload_bytes)
        fmt, width, height = identify(data, max_pixels=self._settings.media_max_pixels)
        store = MediaStore(self._settings.media_dir)
        media_id = await asyncio.to_thread(store.save, data, principal.tag)
        try:
            submitted = await self._tasks.submit(
                principal,
                "process_media",
                {"media_id": media_id},
                defer_by_s=None,
                task_id=media_id,
            )
        except BaseException:
            await asyncio.to_thread(shutil.rmtree, store.root / media_id)
            raise
        return Upload(media_id, submitted, fmt, width, height)

    async def made(self, principal: Principal, media_id: str, variant: str) -> Path:
        """The thumbnail or optimized copy of an upload: the uploader's own, or any for an
        operator. MediaNotFoundError for another's upload, an unknown id or a file not made."""
        store = MediaStore(self._settings.media_dir)
        owner = None if principal.is_operator else principal.tag
        return await asyncio.to_thread(store.variant, media_id, variant, owner=owner)
