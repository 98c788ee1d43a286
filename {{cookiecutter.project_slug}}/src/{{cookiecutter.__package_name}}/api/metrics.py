"""Prometheus metrics of the task layer."""

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from ..services.metrics import render
from .deps import MetricsTokenDep, TaskQueueDep

router = APIRouter(tags=["monitoring"])
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    dependencies=[MetricsTokenDep],
    responses={401: {"description": "METRICS_TOKEN is set and the request does not bear it"}},
)
async def metrics(queue: TaskQueueDep) -> PlainTextResponse:
    """Queue depth per queue, tasks in progress, tries by outcome, try durations."""
    return PlainTextResponse(render(await queue.metrics()), media_type=CONTENT_TYPE)
