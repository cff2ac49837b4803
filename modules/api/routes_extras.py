"""``/sdapi/v1/extra-single-image`` and ``extra-batch-images``: the Extras tab's upscaling over HTTP.

The work is :func:`modules.postprocessing.run_extras`, run on the job queue so it never competes with a generation
for the device. Face restoration is not part of Atelier: a request asking for it is refused, not silently ignored.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from fastapi import APIRouter
from PIL import Image

from modules import images
from modules.api import models
from modules.api.api import ApiContext, decode_base64_to_image, encode_pil_to_base64
from modules.errors import InvalidRequest
from modules.postprocessing import ExtrasSettings, check_settings, run_extras

SETTING_FIELDS = ("resize_mode", "upscaling_resize", "upscaling_resize_w", "upscaling_resize_h", "upscaling_crop",
                  "upscaler_1", "upscaler_2", "extras_upscaler_2_visibility", "upscale_first")


def plaintext_to_html(text: str) -> str:
    """A1111's ``html_info``: the text escaped, lines joined with ``<br>``, in one paragraph."""
    return "<p>" + "<br>\n".join(html.escape(line) for line in text.split("\n")) + "</p>"


def extras_settings(req: models.ExtrasBaseRequest) -> ExtrasSettings:
    """The request's upscale settings; face restoration above 0 is a 422."""
    for key in ("gfpgan_visibility", "codeformer_visibility"):
        if getattr(req, key):
            raise InvalidRequest(f"{key} is {getattr(req, key)}, but face restoration is not available in Atelier.",
                                 f"Send {key}: 0 (the default).")
    settings = ExtrasSettings(**{key: getattr(req, key) for key in SETTING_FIELDS})
    check_settings(settings)
    return settings


def upscaler_dirs(ctx: ApiContext) -> list[Path]:
    return [ctx.paths.model_dir("ESRGAN")] if hasattr(ctx.paths, "model_dir") else []


def run_extras_job(ctx: ApiContext, sources: list[Image.Image], settings: ExtrasSettings) -> list[tuple[str, str]]:
    """Upscale every image on the worker; returns (base64 image, infotext) pairs.

    A source image's own generation parameters travel into the result, as a saved file keeps them.
    """
    dirs = upscaler_dirs(ctx)

    def job() -> list[tuple[str, str]]:
        results = []
        for source in sources:
            geninfo, _ = images.read_info_from_image(source)
            image, infotext = run_extras(source, settings, dirs)
            results.append((encode_pil_to_base64(image, ctx.opts, geninfo), infotext))
        return results

    return ctx.queue.submit(job, kind="extras", description="extras").wait()


def add_routes(router: APIRouter, ctx: ApiContext) -> None:
    """Register the two Extras routes on ``router``."""

    def extra_single_image(req: models.ExtrasSingleImageRequest) -> dict[str, Any]:
        settings = extras_settings(req)
        source = decode_base64_to_image(req.image, "image", ctx.opts)
        [(image, infotext)] = run_extras_job(ctx, [source], settings)
        return {"html_info": plaintext_to_html(infotext), "image": image}

    def extra_batch_images(req: models.ExtrasBatchImagesRequest) -> dict[str, Any]:
        settings = extras_settings(req)
        if not req.imageList:
            raise InvalidRequest("imageList is empty.", "Send imageList: [{data: <base64>, name: <file name>}].")
        sources = [decode_base64_to_image(item.data, f"imageList[{i}] ({item.name or 'unnamed'})", ctx.opts)
                   for i, item in enumerate(req.imageList)]
        results = run_extras_job(ctx, sources, settings)
        return {"html_info": plaintext_to_html(results[-1][1]), "images": [image for image, _ in results]}

    router.add_api_route("/extra-single-image", extra_single_image, methods=["POST"],
                         response_model=models.ExtrasSingleImageResponse)
    router.add_api_route("/extra-batch-images", extra_batch_images, methods=["POST"],
                         response_model=models.ExtrasBatchImagesResponse)
