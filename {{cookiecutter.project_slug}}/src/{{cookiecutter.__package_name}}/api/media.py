"""The media example over HTTP: upload an image, get a task that processes it, then read the
thumbnail and the optimized copy it made."""

from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Path, Request, Response, UploadFile, status
from fastapi.responses import FileResponse

from ..infrastructure.media import (
    MEDIA_ID_PATTERN,
    MediaNotFoundError,
    NotAnImageError,
    TooManyPixelsError,
)
from ..services.media import MediaService, UploadTooLargeError
from ..services.tasks import MissingScopeError
from .auth import Authenticated, forbidden
from .deps import SettingsDep, TaskServiceDep
from .tasks import UNAUTHORIZED, UNPROCESSABLE, TaskAccepted, problem

router = APIRouter(prefix="/api/v1/media", tags=["media"])
MediaId = Annotated[str, Path(pattern=MEDIA_ID_PATTERN, description="From POST /api/v1/media")]


class MediaAccepted(TaskAccepted):
    media_id: str
    format: str
    width: int
    height: int


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    responses={
        **UNAUTHORIZED,
        **problem(403, "The API key lacks tasks:submit (or tasks:submit:process_media)"),
        **problem(413, "The file, or its pixel count, is too large"),
        **problem(415, "Not a JPEG, PNG or WebP image"),
        **problem(422, "No file part `file`, or more than one"),
        **problem(429, "Past your submission rate (TASK_SUBMIT_RATE_LIMIT); see Retry-After"),
        **problem(503, "The queue is unreachable, or full (TASK_MAX_QUEUE_DEPTH); retry later"),
    },
)
async def upload_media(
    file: UploadFile,
    request: Request,
    tasks: TaskServiceDep,
    settings: SettingsDep,
    principal: Authenticated,
    response: Response,
) -> MediaAccepted:
    """Store an image (multipart field `file`) and queue `process_media` for it: a 300x300
    thumbnail and an optimized copy. Answers at once; follow the task at `status_url`."""
    if len((await request.form()).getlist("file")) > 1:  # the form FastAPI has already read
        raise HTTPException(UNPROCESSABLE, "Send one file per upload, in the field `file`.")
    data = await file.read(settings.media_max_upload_bytes + 1)
    try:
        upload = await MediaService(tasks, settings).upload(principal, data)
    except MissingScopeError as exc:
        raise forbidden(exc.scope) from exc
    except (UploadTooLargeError, TooManyPixelsError) as exc:
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, str(exc)) from exc
    except NotAnImageError as exc:
        raise HTTPException(status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, str(exc)) from exc
    accepted = TaskAccepted.of(upload.task)
    response.headers["Location"] = accepted.status_url
    return MediaAccepted(
        **accepted.model_dump(),
        media_id=upload.media_id,
        format=upload.format,
        width=upload.width,
        height=upload.height,
    )


@router.get(
    "/{media_id}/{variant}",
    response_class=FileResponse,
    responses={
        200: {"content": {"image/jpeg": {}, "image/png": {}, "image/webp": {}}},
        **UNAUTHORIZED,
        **problem(404, "No such upload of yours, or its task has not made this file yet"),
    },
)
async def read_media(
    media_id: MediaId,
    variant: Literal["thumbnail", "optimized"],
    tasks: TaskServiceDep,
    settings: SettingsDep,
    principal: Authenticated,
) -> FileResponse:
    """The upload's thumbnail or optimized copy, once `process_media` has made it: the
    uploader's own uploads, or anyone's for an operator."""
    try:
        path = await MediaService(tasks, settings).made(principal, media_id, variant)
    except MediaNotFoundError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    return FileResponse(path)
