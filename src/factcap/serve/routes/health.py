"""``GET /healthz``: liveness and queue depth, the one route that needs no key."""

from __future__ import annotations

from fastapi import APIRouter, Request

from factcap.serve.schemas import Health

router = APIRouter(tags=["service"])


@router.get("/healthz", response_model=Health)
async def healthz(request: Request) -> dict[str, int | str]:
    """Liveness and queue depth; needs no key."""
    state = getattr(request.app.state, "service", None)
    batcher = state.batcher if state is not None else None
    return {"status": "ok", "queue": batcher.depth if batcher else 0}
