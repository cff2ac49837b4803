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
    "infotext": (str | None, None),
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


# extras ---------------------------------------------------------------------------------------------------------------
class ExtrasBaseRequest(BaseModel):
    """A1111's ``ExtrasBaseRequest``: the Extras tab's fields (face restoration is not available here)."""

    resize_mode: int = Field(default=0, title="Resize Mode", description="0: scale by upscaling_resize, 1: scale to "
                             "upscaling_resize_w x upscaling_resize_h.")
    show_extras_results: bool = Field(default=True, title="Show results")
    gfpgan_visibility: float = Field(default=0, ge=0, le=1, title="GFPGAN Visibility")
    codeformer_visibility: float = Field(default=0, ge=0, le=1, title="CodeFormer Visibility")
    codeformer_weight: float = Field(default=0, ge=0, le=1, title="CodeFormer Weight")
    upscaling_resize: float = Field(default=2, gt=0, le=16, title="Upscaling Factor")
    upscaling_resize_w: int = Field(default=512, ge=1, title="Target Width")
    upscaling_resize_h: int = Field(default=512, ge=1, title="Target Height")
    upscaling_crop: bool = Field(default=True, title="Crop to fit")
    upscaler_1: str = Field(default="None", title="Main upscaler")
    upscaler_2: str = Field(default="None", title="Secondary upscaler")
    extras_upscaler_2_visibility: float = Field(default=0, ge=0, le=1, title="Secondary upscaler visibility")
    upscale_first: bool = Field(default=False, title="Upscale first")


class ExtrasSingleImageRequest(ExtrasBaseRequest):
    image: str = Field(default="", title="Image", description="Image to work on, must be a Base64 string.")


class FileData(BaseModel):
    data: str = Field(title="File data", description="Base64 representation of the file")
    name: str = Field(default="", title="File name")


class ExtrasBatchImagesRequest(ExtrasBaseRequest):
    imageList: list[FileData] = Field(title="Images", description="List of images to work on.")  # noqa: N815 - A1111


class ExtrasSingleImageResponse(BaseModel):
    html_info: str = Field(title="HTML info", description="A series of HTML tags containing the process info.")
    image: str | None = Field(default=None, title="Image", description="The generated image in base64 format.")


class ExtrasBatchImagesResponse(BaseModel):
    html_info: str = Field(title="HTML info", description="A series of HTML tags containing the process info.")
    images: list[str] = Field(title="Images", description="The generated images in base64 format.")


# models, styles, scripts --------------------------------------------------------------------------------------------
class SDVaeItem(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model_name: str
    filename: str


class EmbeddingItem(BaseModel):
    step: int | None = None
    sd_checkpoint: str | None = None
    sd_checkpoint_name: str | None = None
    shape: int
    vectors: int


class EmbeddingsResponse(BaseModel):
    loaded: dict[str, EmbeddingItem]
    skipped: dict[str, EmbeddingItem]


class PromptStyleItem(BaseModel):
    name: str
    prompt: str | None
    negative_prompt: str | None


class ScriptsList(BaseModel):
    txt2img: list[str] = Field(default_factory=list, description="Titles of scripts (txt2img)")
    img2img: list[str] = Field(default_factory=list, description="Titles of scripts (img2img)")


class ScriptArg(BaseModel):
    label: str | None = None
    value: Any = None
    minimum: Any = None
    maximum: Any = None
    step: Any = None
    choices: list[Any] | None = None


class ScriptInfo(BaseModel):
    name: str | None = None
    is_alwayson: bool | None = None
    is_img2img: bool | None = None
    args: list[ScriptArg] = Field(default_factory=list)


class ExtensionItem(BaseModel):
    name: str
    remote: str | None = None
    branch: str | None = None
    commit_hash: str | None = None
    commit_date: int | None = None
    version: str | None = None
    enabled: bool
