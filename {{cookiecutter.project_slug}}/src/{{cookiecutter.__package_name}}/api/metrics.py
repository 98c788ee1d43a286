"""Prometheus metrics of the task layer."""

from fastapi import APIRouter, Response
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from ..services.metrics import render
from .deps import MetricsTokenDep, TaskQueueDep

router = APIRouter(tags=["monitoring"])


@router.get(
    "/metrics",
    response_class=Response,
    dependencies=[MetricsTokenDep],
    responses={
        200: {"content": {CONTENT_TYPE_LATEST: {}}},
        401: {"description": "METRICS_TOKEN is set and the request does not bear it"},
    },
)
async def metrics(queue: TaskQueueDep) -> Response:
    """Queue depths, tasks in progress, live workers, submissions, tries by outcome, their
    durations, waits before a start, dead letters."""
    return Response(render(await queue.metrics()), media_type=CONTENT_TYPE_LATEST)
