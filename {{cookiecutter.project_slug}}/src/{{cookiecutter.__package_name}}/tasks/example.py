"""The minimal example: a task that takes a few steps and reports its progress."""

import asyncio
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..infrastructure.queue import report_progress

# Its TaskSpec's timeout (registry.py): a try that runs longer fails and is retried.
EXAMPLE_TIMEOUT_S = 60.0


class ExampleTaskArgs(BaseModel):
    """What `POST /api/v1/tasks` accepts as `args` for `example_task`."""

    model_config = ConfigDict(extra="forbid")

    message: str = Field(min_length=1, max_length=1_000)
    steps: int = Field(default=5, ge=1, le=100)
    delay_s: float = Field(default=0.1, ge=0, le=10)

    @model_validator(mode="after")
    def fits_in_its_timeout(self) -> "ExampleTaskArgs":
        if self.steps * self.delay_s > EXAMPLE_TIMEOUT_S:
            raise ValueError(
                f"steps x delay_s is {self.steps * self.delay_s:g} s, past the task's "
                f"{EXAMPLE_TIMEOUT_S:g} s timeout"
            )
        return self


async def example_task(
    ctx: dict[str, Any], message: str, steps: int = 5, delay_s: float = 0.1
) -> dict[str, Any]:
    """Wait `delay_s` per step, reporting progress after each, then echo the message."""
    for step in range(1, steps + 1):
        await asyncio.sleep(delay_s)
        await report_progress(ctx, step * 100 // steps, data={"step": step, "of": steps})
    return {"message": message, "steps": steps, "task_id": ctx["job_id"]}
