"""``/sdapi/v1/scripts``, ``script-info`` and ``extensions``, read from the context's provider callables.

The extension system fills ``ApiContext.scripts_info`` / ``extensions_info``; these routes only shape the answers
the way A1111 does (``scripts`` lists the selectable scripts per tab; always-on ones are in ``script-info`` only).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from modules.api import models
from modules.api.api import ApiContext


def scripts_list(infos: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Names of the selectable scripts of each tab."""
    lists: dict[str, list[str]] = {"txt2img": [], "img2img": []}
    for info in infos:
        if info.get("is_alwayson") or not info.get("name"):
            continue
        lists["img2img" if info.get("is_img2img") else "txt2img"].append(str(info["name"]))
    return lists


def add_routes(router: APIRouter, ctx: ApiContext) -> None:
    """Register the scripts and extensions listing routes on ``router``."""

    def get_scripts_list() -> dict[str, list[str]]:
        return scripts_list(ctx.scripts_info())

    def get_script_info() -> list[dict[str, Any]]:
        return list(ctx.scripts_info())

    def get_extensions_list() -> list[dict[str, Any]]:
        assert ctx.extensions_info is not None  # filled in ApiContext.__post_init__
        return list(ctx.extensions_info())

    router.add_api_route("/scripts", get_scripts_list, methods=["GET"], response_model=models.ScriptsList)
    router.add_api_route("/script-info", get_script_info, methods=["GET"], response_model=list[models.ScriptInfo])
    router.add_api_route("/extensions", get_extensions_list, methods=["GET"],
                         response_model=list[models.ExtensionItem])
