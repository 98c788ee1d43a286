"""Uploaded images and what the media tasks make of them: one folder per upload under MEDIA_DIR.

The API writes `original` and `owner` (the uploader's tag); the workers read it and write
`thumbnail.*` and `optimized.*` beside it, which the API serves to the uploader. API and workers
must share the folder (the compose file mounts one volume in both).
"""

import re
import uuid
import warnings
from io import BytesIO
from pathlib import Path

from PIL import Image, UnidentifiedImageError

MEDIA_ID_PATTERN = r"^[0-9a-f]{32}$"
ORIGINAL = "original"
OWNER = "owner"
# What the media tasks make of an upload, by the name its URL gives it.
VARIANTS = ("thumbnail", "optimized")
# What uploads may be; anything else is refused before it is stored.
ACCEPTED_FORMATS = frozenset({"JPEG", "PNG", "WEBP"})


class NotAnImageError(ValueError):
    pass


class TooManyPixelsError(ValueError):
    pass


class MediaNotFoundError(LookupError):
    pass


def identify(data: bytes, *, max_pixels: int) -> tuple[str, int, int]:
    """The format, width and height from the image's header, without decoding its pixels.

    Pillow guards against decompression bombs itself, with a warning past MAX_IMAGE_PIXELS and
    an error past twice that; here `max_pixels` decides, with one answer for any image too big.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(BytesIO(data)) as image:
                fmt, (width, height) = image.format or "", image.size
    except Image.DecompressionBombError as exc:
        raise TooManyPixelsError(
            f"The image is too large: at most {max_pixels:,} pixels are accepted."
        ) from exc
    except (UnidentifiedImageError, OSError) as exc:
        raise NotAnImageError("The file is not an image that can be read.") from exc
    if fmt not in ACCEPTED_FORMATS:
        accepted = ", ".join(sorted(ACCEPTED_FORMATS))
        raise NotAnImageError(f"{fmt or 'This'} images are not accepted: send {accepted}.")
    if width * height > max_pixels:
        raise TooManyPixelsError(
            f"The image is {width}x{height} pixels; at most {max_pixels:,} pixels are accepted."
        )
    return fmt, width, height


class MediaStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def save(self, data: bytes, owner: str) -> str:
        """Store an upload of the principal tagged `owner`; returns its new media id."""
        media_id = uuid.uuid4().hex
        folder = self.root / media_id
        folder.mkdir(parents=True)
        (folder / OWNER).write_text(owner)
        (folder / ORIGINAL).write_bytes(data)
        return media_id

    def folder(self, media_id: str) -> Path:
        """The upload's folder; the id is checked so that no path leaves MEDIA_DIR."""
        if not re.fullmatch(MEDIA_ID_PATTERN, media_id):
            raise MediaNotFoundError(f"{media_id!r} is not a media id.")
        folder = self.root / media_id
        if not (folder / ORIGINAL).is_file():
            raise MediaNotFoundError(f"No upload {media_id!r}.")
        return folder

    def variant(self, media_id: str, variant: str, *, owner: str | None) -> Path:
        """The file a media task made of the upload (`thumbnail` or `optimized`); `owner`
        None reads anyone's upload. Another owner's upload is not found, as an unknown id."""
        if variant not in VARIANTS:
            raise MediaNotFoundError(f"{variant!r} is not one of {', '.join(VARIANTS)}.")
        folder = self.folder(media_id)
        owner_file = folder / OWNER
        if owner is not None and (not owner_file.is_file() or owner_file.read_text() != owner):
            raise MediaNotFoundError(f"No upload {media_id!r}.")
        made = sorted(folder.glob(f"{variant}.*"))
        if not made:
            raise MediaNotFoundError(
                f"Upload {media_id!r} has no {variant} yet: its task has not made one."
            )
        return made[0]
