"""Users, the database's worked example: creating one enqueues its welcome task on commit."""

import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, status
from pydantic import BaseModel, ConfigDict, Field

from ..access import SUBMIT, Principal
from ..services.users import EmailTakenError, create_user
from .auth import require
from .deps import DbSessionDep, SettingsDep

router = APIRouter(prefix="/api/v1/users", tags=["users"])
# One @, something on each side, a dot in the domain, no spaces or control characters: what
# the example needs. Names may hold any printable text.
EMAIL_PATTERN = r"^[^@\s\x00-\x1f\x7f]+@[^@\s\x00-\x1f\x7f]+\.[^@\s.\x00-\x1f\x7f]+$"
NAME_PATTERN = r"^[^\x00-\x1f\x7f]+$"
Submitter = Annotated[Principal, Depends(require(SUBMIT))]


class UserIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: str = Field(max_length=320, pattern=EMAIL_PATTERN)
    name: str = Field(min_length=1, max_length=200, pattern=NAME_PATTERN)


class UserOut(BaseModel):
    id: uuid.UUID
    email: str
    name: str
    created_at: datetime
    welcome_task_id: str = Field(description="Follow it at /api/v1/tasks/{welcome_task_id}")


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses={status.HTTP_409_CONFLICT: {"description": "The e-mail address is taken"}},
)
async def post_user(
    body: UserIn, principal: Submitter, session: DbSessionDep, settings: SettingsDep
) -> UserOut:
    """Create a user; its welcome task is enqueued if, and only if, the user is stored."""
    try:
        created = await create_user(session, settings, principal, email=body.email, name=body.name)
    except EmailTakenError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    user = created.user
    return UserOut(
        id=user.id,
        email=user.email,
        name=user.name,
        created_at=user.created_at,
        welcome_task_id=created.welcome_task_id,
    )
