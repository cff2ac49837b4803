"""A1111's ``/internal`` routes that page scripts and clients call: ``GET /internal/ping`` (is the server up, and
which build of the app answers, so a page can tell that a restart finished) and ``POST /internal/progress``."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, Field


class ProgressRequest(BaseModel):
    id_task: str = Field(description="The task id given to the job (force_task_id / the UI's task id).")
    id_live_preview: int = Field(default=-1, description="The last preview id the caller has; -1 for none.")
    live_preview: bool = Field(default=True, description="Whether to send the live preview image.")


def add_internal_routes(app: FastAPI, queue: Any, build_id: str) -> None:
    """Register the routes on ``app``; ``queue`` is the app's ``JobQueue``, ``build_id`` names this build."""

    def ping() -> dict[str, Any]:
        return {"status": "ok", "build": build_id}

    def progress(req: ProgressRequest) -> dict[str, Any]:
        return queue.progress(req.id_task, req.id_live_preview, req.live_preview)

    app.add_api_route("/internal/ping", ping, methods=["GET"])
    app.add_api_route("/internal/progress", progress, methods=["POST"])
