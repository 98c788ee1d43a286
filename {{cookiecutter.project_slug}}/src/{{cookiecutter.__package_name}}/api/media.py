"""The media example over HTTP: upload an image, get a task that processes it."""

from typing import Literal

from fastapi import APIRouter, HTTPException, Response, UploadFile, status
from pydantic import BaseModel

from ..infrastructure.media import NotAnImageError, TooManyPixelsError
from ..services.media import MediaService, UploadTooLargeError
from .deps import SettingsDep, TaskServiceDep
from .tasks import problem, status_url

router = APIRouter(prefix="/api/v1/media", tags=["media"])


class MediaAccepted(BaseModel):
    media_id: str
    task_id: str
    status: Literal["queued"]
    status_url: str
    format: str
    width: int
    height: int


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    responses={
        **problem(413, "The file, or its pixel count, is too large"),
        **problem(415, "Not a JPEG, PNG or WebP image"),
        **problem(503, "The queue is unreachable, or full (TASK_MAX_QUEUE_DEPTH); retry later"),
    },
)
async def upload_media(
    file: UploadFile,
    tasks: TaskServiceDep,
    settings: SettingsDep,
    response: Response,
) -> MediaAccepted:
    """Store an image (multipart field `file`) and queue `process_media` for it: a 300x300
    thumbnail and an optimized copy. Answers at once; follow the task at `status_url`."""
    data = await file.read(settings.media_max_upload_bytes + 1)
    try:
        upload = await MediaService(tasks, settings).upload(data)
    except (UploadTooLargeError, TooManyPixelsError) as exc:
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, str(exc)) from exc
    except NotAnImageError as exc:
        raise HTTPException(status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, str(exc)) from exc
    url = status_url(upload.media_id)
    response.headers["Location"] = url
    return MediaAccepted(
        media_id=upload.media_id,
        task_id=upload.media_id,
        status="queued",
        status_url=url,
        format=upload.format,
        width=upload.width,
        height=upload.height,
    )
