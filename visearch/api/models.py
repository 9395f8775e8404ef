"""Model versions over HTTP: status, deploy, switch, retire (the CLI's ``visearch model``).

Write endpoints need the API token when one is configured: a model switch
changes every search result.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException
from pydantic import BaseModel, Field

from visearch.api.guard import bearer_token_matches
from visearch.models.rollout import ModelRollout, RolloutError

STATUS_OF = {
    "unknown_model": 404,
    "bad_model": 422,
    "backfill_incomplete": 409,
    "not_allowed": 409,
    "timeout": 504,
    "models_unreadable": 503,
}


class DeployRequest(BaseModel):
    model_dir: str = Field(description="a model directory readable by every visearch process")


class ModelAccepted(BaseModel):
    version: str
    status: str


def models_router(
    rollout: ModelRollout | None, require_token: Callable[..., None], token: str
) -> APIRouter:
    """The model endpoints; ``token``: the API token, which also shows model directories."""
    router = APIRouter()
    guard = [Depends(require_token)]

    def rolled() -> ModelRollout:
        if rollout is None:
            raise HTTPException(
                501,
                {
                    "code": "not_supported",
                    "message": "model versions need local shards (VISEARCH_SHARD_URLS is set)",
                },
            )
        return rollout

    def answer(call: Callable[[], Any]) -> Any:
        try:
            return call()
        except RolloutError as exc:
            raise HTTPException(
                STATUS_OF.get(exc.code, 400), {"code": exc.code, "message": exc.message}
            ) from exc

    @router.get("/v1/models")
    def model_status(authorization: Annotated[str | None, Header()] = None) -> dict[str, Any]:
        """Every model version: state, index size, images still missing from its index.

        Model directories (paths on the servers) only with the API token.
        """
        status = rolled().status()
        if not (token and bearer_token_matches(authorization, token)):
            for version in status["versions"]:
                version.pop("model_dir", None)
        return status

    @router.post("/v1/models", response_model=ModelAccepted, status_code=202, dependencies=guard)
    def deploy_model(request: DeployRequest) -> ModelAccepted:
        """Register a model: new uploads are embedded with it too, its index builds beside."""
        version = answer(lambda: rolled().deploy(Path(request.model_dir)))
        return ModelAccepted(version=version, status="deployed")

    @router.post("/v1/models/{version}/switch", response_model=ModelAccepted, dependencies=guard)
    def switch_model(version: str) -> ModelAccepted:
        """Move searches to a deployed model whose index is complete (409 until it is)."""
        answer(lambda: rolled().switch(version))
        return ModelAccepted(version=version, status="serving")

    @router.delete(
        "/v1/models/{version}", response_model=ModelAccepted, status_code=202, dependencies=guard
    )
    def retire_model(version: str) -> ModelAccepted:
        """Drop a candidate model (the serving one cannot be retired)."""
        answer(lambda: rolled().retire(version))
        return ModelAccepted(version=version, status="retired")

    return router
