"""Background tasks: plain `async def task(ctx, ...)` functions, listed in `registry.py`."""
