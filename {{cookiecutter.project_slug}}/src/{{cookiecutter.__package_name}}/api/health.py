"""Liveness and readiness probes for orchestrators and load balancers."""

from fastapi import APIRouter, Response, status
from pydantic import BaseModel

from ..services.health import check_readiness, worker_heartbeats
from .deps import ReadinessChecksDep, WorkerProbesDep

router = APIRouter(prefix="/health", tags=["health"])
READY_TIMEOUT_S = 2.0


class Liveness(BaseModel):
    status: str


class ReadinessOut(BaseModel):
    status: str
    checks: dict[str, str]
    workers: dict[str, str]


@router.get("/live")
async def live() -> Liveness:
    """The process is up and serving HTTP."""
    return Liveness(status="ok")


@router.get(
    "/ready",
    responses={status.HTTP_503_SERVICE_UNAVAILABLE: {"model": ReadinessOut}},
)
async def ready(
    checks: ReadinessChecksDep, workers: WorkerProbesDep, response: Response
) -> ReadinessOut:
    """Every dependency answers; 503 with the failing check otherwise. Worker heartbeats are
    reported beside, without failing readiness."""
    readiness = await check_readiness(checks, timeout_s=READY_TIMEOUT_S)
    if not readiness.ready:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
        response.headers["Retry-After"] = "5"
    outcome = "ok" if readiness.ready else "unavailable"
    heartbeats = await worker_heartbeats(workers)
    return ReadinessOut(status=outcome, checks=readiness.checks, workers=heartbeats)
