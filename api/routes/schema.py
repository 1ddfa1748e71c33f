"""GET /schema: the WorkflowSpec JSON Schema Studio builds its forms from."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from fastapi import APIRouter

from ...graph.spec import workflow_json_schema
from ..body import JSONRoute

router = APIRouter(tags=["schema"], route_class=JSONRoute)


@lru_cache(maxsize=1)
def _schema() -> dict[str, Any]:
    return workflow_json_schema()


@router.get("/schema", summary="WorkflowSpec JSON Schema", response_model=dict[str, Any])
async def get_schema() -> dict[str, Any]:
    return _schema()
