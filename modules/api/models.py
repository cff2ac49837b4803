"""Pydantic request/response models of the ``/sdapi/v1`` routes, with A1111's field names and defaults.

Like A1111's ``PydanticModelGenerator``, the txt2img/img2img request models are built from the ``init=True`` fields of
the processing dataclasses (minus ``API_NOT_ALLOWED``), every field optional, plus the API-only keys.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, create_model

from modules.processing import StableDiffusionProcessingImg2Img, StableDiffusionProcessingTxt2Img

API_NOT_ALLOWED = {
    "self", "kwargs", "sd_model", "outpath_samples", "outpath_grids", "sampler_index", "extra_generation_params",
    "overlay_images", "do_not_reload_embeddings", "seed_enable_extras", "prompt_for_display",
    "sampler_noise_scheduler_override", "ddim_discretize",
}

# Keys every generation request takes besides the processing fields: (type, default).
API_EXTRA_FIELDS: dict[str, tuple[Any, Any]] = {
    "sampler_index": (str, "Euler"),
    "script_name": (str | None, None),
    "script_args": (list, []),
    "send_images": (bool, True),
    "save_images": (bool, False),
    "alwayson_scripts": (dict, {}),
}

IMG2IMG_EXTRA_FIELDS: dict[str, tuple[Any, Any]] = {
    "init_images": (list[str] | None, None),
    "mask": (str | None, None),
    "latent_mask": (str | None, None),
    "include_init_images": (bool, False),
}


def _dataclass_fields(cls: type) -> dict[str, tuple[Any, Any]]:
    """``init=True`` dataclass fields as optional pydantic field definitions, in declaration order."""
    hints = typing.get_type_hints(cls)
    fields: dict[str, tuple[Any, Any]] = {}
    for f in dataclasses.fields(cls):
        if not f.init or f.name in API_NOT_ALLOWED:
            continue
        default = f.default if f.default is not dataclasses.MISSING else None
        if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = f.default_factory()  # type: ignore[misc]
        fields[f.name] = (hints.get(f.name, Any) | None, default)
    return fields


def _request_model(name: str, cls: type, extra: dict[str, tuple[Any, Any]]) -> type[BaseModel]:
    definitions = {**_dataclass_fields(cls), **extra}
    fields = {key: (typ, Field(default=default)) for key, (typ, default) in definitions.items()}
    return create_model(name, __config__=ConfigDict(extra="ignore", protected_namespaces=()), **fields)


StableDiffusionTxt2ImgProcessingAPI = _request_model(
    "StableDiffusionTxt2ImgProcessingAPI", StableDiffusionProcessingTxt2Img, API_EXTRA_FIELDS)
StableDiffusionImg2ImgProcessingAPI = _request_model(
    "StableDiffusionImg2ImgProcessingAPI", StableDiffusionProcessingImg2Img, {**API_EXTRA_FIELDS,
                                                                              **IMG2IMG_EXTRA_FIELDS})


class ImageResponse(BaseModel):
    """``TextToImageResponse`` / ``ImageToImageResponse``: b64 images, echoed request fields, ``Processed.js()``."""

    images: list[str] | None = Field(default=None, description="The generated images in base64 format.")
    parameters: dict[str, Any]
    info: str


class PNGInfoRequest(BaseModel):
    image: str = Field(title="Image", description="The base64 encoded image")


class PNGInfoResponse(BaseModel):
    info: str = Field(title="Image info", description="A string with the parameters used to generate the image")
    items: dict[str, Any] = Field(title="Items", description="All the other fields the image had")
    parameters: dict[str, Any] = Field(title="Parameters", description="The parsed generation info fields")


class ProgressResponse(BaseModel):
    progress: float = Field(title="Progress", description="The progress with a range of 0 to 1")
    eta_relative: float = Field(title="ETA in secs")
    state: dict[str, Any] = Field(title="State", description="The current state snapshot")
    current_image: str | None = Field(default=None, title="Current image")
    textinfo: str | None = Field(default=None, title="Info text")


class SamplerItem(BaseModel):
    name: str
    aliases: list[str]
    options: dict[str, Any]


class SchedulerItem(BaseModel):
    name: str
    label: str
    aliases: list[str] | None
    default_rho: float | None
    need_inner_model: bool | None


class UpscalerItem(BaseModel):
    name: str
    model_name: str | None
    model_path: str | None
    model_url: str | None
    scale: float | None


class LatentUpscalerModeItem(BaseModel):
    name: str


class SDModelItem(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    title: str
    model_name: str
    hash: str | None
    sha256: str | None
    filename: str
    config: str | None


class MemoryResponse(BaseModel):
    ram: dict[str, Any] = Field(title="RAM", description="System memory stats")
    cuda: dict[str, Any] = Field(title="CUDA", description="nVidia CUDA memory stats")


class ErrorResponse(BaseModel):
    """The JSON body of every 4xx/5xx answer of ``/sdapi``."""

    error: str
    detail: str
    hint: str = ""
    errors: str = ""
