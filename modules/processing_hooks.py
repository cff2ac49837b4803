"""The hook points ``process_images`` offers scripts and callbacks, and the argument objects A1111 passes them.

Processing never imports the extension system. A processing object carries two optional collaborators:

* ``p.scripts``: anything with (some of) A1111's ``ScriptRunner`` methods (:class:`ScriptRunnerLike`); missing
  methods are skipped, so a partial runner is fine.
* ``p.callbacks``: anything with (some of) the call functions of A1111's ``script_callbacks`` module
  (:class:`ProcessingCallbacks`), e.g. that module itself once the extension system provides it.

The small argument classes keep A1111's names (``scripts.PostprocessImageArgs`` ...) so ``modules/scripts.py`` can
re-export them and extension code that builds or reads them keeps working.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Protocol

log = logging.getLogger(__name__)


@dataclass
class PostSampleArgs:
    """``post_sample``: the latents right after sampling; ``samples`` is read back."""

    samples: Any


@dataclass
class PostprocessImageArgs:
    """``postprocess_image``: one finished PIL image; ``image`` is read back."""

    image: Any


@dataclass
class PostprocessBatchListArgs:
    """``postprocess_batch_list``: the batch's images ([3, H, W] tensors in 0..1) as a list; ``images`` read back."""

    images: list


@dataclass
class PostProcessMaskOverlayArgs:
    """``postprocess_maskoverlay``: an inpainting result's overlay inputs before compositing."""

    index: int
    mask_for_overlay: Any
    overlay_image: Any


@dataclass
class MaskBlendArgs:
    """``on_mask_blend``: inpainting's final latent blend; ``blended_latent`` is read back."""

    current_latent: Any
    nmask: Any
    init_latent: Any
    mask: Any
    blended_latent: Any
    denoiser: Any = None
    sigma: Any = None


@dataclass
class ExtraNoiseParams:
    """``on_extra_noise``: img2img's extra noise before it is added; ``noise`` is read back."""

    noise: Any
    x: Any
    xi: Any


class ScriptRunnerLike(Protocol):
    """The ``ScriptRunner`` methods processing calls, in pipeline order (all optional)."""

    def before_process(self, p: Any) -> None: ...

    def process(self, p: Any) -> None: ...

    def before_process_batch(self, p: Any, **kwargs: Any) -> None: ...

    def after_extra_networks_activate(self, p: Any, **kwargs: Any) -> None: ...

    def process_batch(self, p: Any, **kwargs: Any) -> None: ...

    def process_before_every_sampling(self, p: Any, **kwargs: Any) -> None: ...

    def post_sample(self, p: Any, ps: PostSampleArgs) -> None: ...

    def postprocess_batch(self, p: Any, images: Any, **kwargs: Any) -> None: ...

    def postprocess_batch_list(self, p: Any, pp: PostprocessBatchListArgs, **kwargs: Any) -> None: ...

    def postprocess_image(self, p: Any, pp: PostprocessImageArgs) -> None: ...

    def postprocess_maskoverlay(self, p: Any, ppmo: PostProcessMaskOverlayArgs) -> None: ...

    def postprocess_image_after_composite(self, p: Any, pp: PostprocessImageArgs) -> None: ...

    def on_mask_blend(self, p: Any, mba: MaskBlendArgs) -> None: ...

    def before_hr(self, p: Any) -> None: ...

    def postprocess(self, p: Any, processed: Any) -> None: ...


class ProcessingCallbacks(Protocol):
    """The ``script_callbacks`` call functions processing uses (all optional)."""

    def cfg_denoiser_callback(self, params: Any) -> None: ...

    def cfg_denoised_callback(self, params: Any) -> None: ...

    def cfg_after_cfg_callback(self, params: Any) -> None: ...

    def before_image_saved_callback(self, params: Any) -> None: ...

    def image_saved_callback(self, params: Any) -> None: ...

    def extra_noise_callback(self, params: ExtraNoiseParams) -> None: ...


def run_script_hook(p: Any, name: str, *args: Any, **kwargs: Any) -> None:
    """Call ``p.scripts.<name>(p, ...)`` if there is a runner and it has that method."""
    runner = getattr(p, "scripts", None)
    method = getattr(runner, name, None) if runner is not None else None
    if method is not None:
        method(p, *args, **kwargs)


def callback_function(p: Any, name: str) -> Any:
    """``p.callbacks.<name>`` or None, for hooks that take a plain callable."""
    callbacks = getattr(p, "callbacks", None)
    return getattr(callbacks, name, None) if callbacks is not None else None
