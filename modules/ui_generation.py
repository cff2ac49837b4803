"""The generation form shared by txt2img and img2img: prompts with token counters, styles, sampler, size, batch,
CFG, seed, Generate/Interrupt/Skip, and the results column (progress, live preview, gallery, infotext).

A tab builds the parts it wants in its own layout, then calls :meth:`GenerationForm.connect` with a function that
turns the submitted values into a processing object. The click handler only translates and follows the job on the
shared queue; generation itself is the chosen script's ``run`` or ``process_images`` on the queue's worker, as for
the API. The tab's scripts (A1111's ``ScriptRunner``) add their controls with :meth:`GenerationForm.build_scripts`;
their values become ``p.script_args``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import gradio as gr

from modules import script_callbacks, ui_progress
from modules.errors import AtelierError, InvalidRequest
from modules.ui_common import UiEnv, error_html, error_message, infotext_html, parse_infotext
from modules.ui_components import DropdownMulti, FormRow, ToolButton

log = logging.getLogger(__name__)

DEFAULT_SAMPLER = "DPM++ 2M"
DEFAULT_SCHEDULER = "Automatic"
RANDOM_SEED = "\U0001f3b2\ufe0f"  # dice: seed -1
REUSE_SEED = "\u267b\ufe0f"  # recycle: the shown picture's seed
PASTE = "\u2199\ufe0f"  # read generation parameters
REFRESH = "\U0001f504"
SWAP = "\u21c5"


def sampler_choices() -> list[str]:
    from modules.samplers import registry

    return registry.sampler_names()


def scheduler_choices() -> list[str]:
    from modules.samplers.schedulers import schedulers

    return [s.label for s in schedulers]


def sampler_from_params(params: dict[str, Any]) -> str | None:
    """The sampler of an infotext, without a legacy scheduler suffix ("DPM++ 2M Karras" → "DPM++ 2M")."""
    from modules.samplers import registry

    name = params.get("Sampler")
    try:
        return registry.split_sampler_scheduler(name)[0] if name else None
    except ValueError:
        return None


def scheduler_from_params(params: dict[str, Any]) -> str | None:
    """The schedule type's label: from a legacy sampler suffix, else the "Schedule type" field."""
    from modules.samplers import registry
    from modules.samplers.schedulers import find_scheduler

    legacy = None
    if params.get("Sampler"):
        try:
            legacy = registry.split_sampler_scheduler(params["Sampler"])[1]
        except ValueError:
            legacy = None
    try:
        return find_scheduler(legacy or params.get("Schedule type")).label
    except ValueError:
        return None


def token_counter_html(env: UiEnv, text: str, styles: list[str] | None, steps: Any, negative: bool) -> str:
    """"tokens/room" for a prompt with its styles applied, like A1111's counter (room grows by 75-token chunks)."""
    from modules.conditioning_chunks import count_tokens

    styles = list(styles or [])
    try:
        step_count = max(1, int(steps or 20))
    except (TypeError, ValueError):
        step_count = 20
    params = script_callbacks.BeforeTokenCounterParams(text or "", step_count, styles, is_positive=not negative)
    script_callbacks.before_token_counter_callback(params)  # extensions may rewrite the prompt that is counted
    text = params.prompt
    db = env.styles
    styled = (db.apply_negative_styles_to_prompt(text or "", styles) if negative
              else db.apply_styles_to_prompt(text or "", styles)) if db is not None else (text or "")
    opts = env.ctx.opts
    tokens, room = count_tokens(styled, step_count, is_positive=not negative,
                                emphasis=getattr(opts, "emphasis", "Original"),
                                comma_padding_backtrack=getattr(opts, "comma_padding_backtrack", 20))
    return f"<span class='token-count'>{tokens}/{room}</span>"


def check_size(width: int, height: int) -> None:
    if width <= 0 or height <= 0 or width % 8 or height % 8:
        raise InvalidRequest(f"Width and height must be positive multiples of 8, got {width}x{height}.",
                             "Pick a size such as 512x512.")


def run_processing(env: UiEnv, p: Any) -> Any:
    """The queue job of a UI generation: load the chosen checkpoint (lazily), wire collaborators, generate (through
    the selected script's ``run`` when one is chosen)."""
    from modules.scripts import process_with_scripts

    ctx = env.ctx
    state = ctx.queue.state
    state.textinfo = "Loading checkpoint..."
    p.sd_model = ctx.get_model()
    state.textinfo = None
    p.opts, p.state, p.paths = ctx.opts, state, ctx.paths
    p.prompt_styles = env.styles
    if p.callbacks is None:
        p.callbacks = script_callbacks
    return process_with_scripts(p)


class GenerationForm:
    """The components of one tab's generation form; build methods create them in the current Gradio context."""

    def __init__(self, tabname: str, env: UiEnv) -> None:
        self.tabname = tabname
        self.env = env
        self.extra_paste_fields: list[tuple[Any, Any]] = []
        self.script_runner: Any = None
        self.script_inputs: list[Any] = []

    def default(self, label: str, value: Any) -> Any:
        return self.env.defaults.get(self.tabname, label, value)

    def _id(self, name: str) -> str:
        return f"{self.tabname}_{name}"

    # prompts and buttons ----------------------------------------------------------------------------------------
    def build_toprow(self) -> None:
        """Prompt, negative prompt and their counters beside Generate, Interrupt, Skip, paste and styles."""
        with gr.Row(elem_id=self._id("toprow"), elem_classes=["toprow"]):
            with gr.Column(scale=6, elem_id=self._id("prompt_container")):
                with gr.Row(elem_classes=["prompt-row"]):
                    self.prompt = gr.Textbox(label="Prompt", lines=3, max_lines=20, elem_id=self._id("prompt"),
                                             placeholder="Prompt (press Ctrl+Enter to generate)", show_label=False,
                                             value=self.default("Prompt", ""), scale=8)
                    self.token_counter = gr.HTML("<span class='token-count'>0/75</span>",
                                                 elem_id=self._id("token_counter"), elem_classes=["token-counter"])
                with gr.Row(elem_classes=["prompt-row"]):
                    self.negative_prompt = gr.Textbox(
                        label="Negative prompt", lines=2, max_lines=20, elem_id=self._id("neg_prompt"),
                        placeholder="Negative prompt (press Ctrl+Enter to generate)", show_label=False,
                        value=self.default("Negative prompt", ""), scale=8)
                    self.negative_token_counter = gr.HTML("<span class='token-count'>0/75</span>",
                                                          elem_id=self._id("negative_token_counter"),
                                                          elem_classes=["token-counter"])
            with gr.Column(scale=2, min_width=220, elem_id=self._id("actions_column")):
                self.generate = gr.Button("Generate", variant="primary", elem_id=self._id("generate"))
                with gr.Row(elem_classes=["interrupt-row"]):
                    self.interrupt = gr.Button("Interrupt", elem_id=self._id("interrupt"), size="sm")
                    self.skip = gr.Button("Skip", elem_id=self._id("skip"), size="sm")
                with gr.Row(elem_id=self._id("tools")):
                    self.paste = ToolButton(PASTE, elem_id=self._id("paste"),
                                            tooltip="Read generation parameters from prompt or last generation "
                                                    "if prompt is empty into user interface.")
                    names = list(self.env.styles.styles) if self.env.styles is not None else []
                    self.styles = DropdownMulti(label="Styles", choices=names, value=[], elem_id=self._id("styles"),
                                                show_label=False, scale=4, container=False)
                    self.styles_refresh = ToolButton(REFRESH, elem_id=self._id("styles_refresh"),
                                                     tooltip="Reload styles from the styles file.")

    # settings ---------------------------------------------------------------------------------------------------
    def build_sampler(self) -> None:
        with FormRow(elem_id=self._id("sampler_row")):
            samplers = sampler_choices()
            self.sampler = gr.Dropdown(label="Sampling method", choices=samplers, elem_id=self._id("sampling"),
                                       value=self.default("Sampling method", DEFAULT_SAMPLER))
            self.scheduler = gr.Dropdown(label="Schedule type", choices=scheduler_choices(),
                                         elem_id=self._id("scheduler"),
                                         value=self.default("Schedule type", DEFAULT_SCHEDULER))
            self.steps = gr.Slider(minimum=1, maximum=150, step=1, label="Sampling steps",
                                   elem_id=self._id("steps"), value=self.default("Sampling steps", 20))

    def build_size(self) -> None:
        with FormRow(elem_id=self._id("dimensions_row")):
            with gr.Column(scale=4):
                self.width = gr.Slider(minimum=8, maximum=2048, step=8, label="Width", elem_id=self._id("width"),
                                       value=self.default("Width", 512))
                self.height = gr.Slider(minimum=8, maximum=2048, step=8, label="Height", elem_id=self._id("height"),
                                        value=self.default("Height", 512))
            self.swap_size = ToolButton(SWAP, elem_id=self._id("res_switch_btn"), tooltip="Swap width/height")
            with gr.Column(scale=2):
                self.batch_count = gr.Slider(minimum=1, maximum=100, step=1, label="Batch count",
                                             elem_id=self._id("batch_count"), value=self.default("Batch count", 1))
                self.batch_size = gr.Slider(minimum=1, maximum=8, step=1, label="Batch size",
                                            elem_id=self._id("batch_size"), value=self.default("Batch size", 1))
        self.swap_size.click(fn=None, js="(w, h) => [h, w]", inputs=[self.width, self.height],
                             outputs=[self.width, self.height], queue=False, show_progress="hidden")

    def build_cfg(self) -> None:
        self.cfg_scale = gr.Slider(minimum=1.0, maximum=30.0, step=0.5, label="CFG Scale",
                                   elem_id=self._id("cfg_scale"), value=self.default("CFG Scale", 7.0))

    def build_seed(self) -> None:
        with FormRow(elem_id=self._id("seed_row")):
            self.seed = gr.Number(label="Seed", value=self.default("Seed", -1), precision=0, elem_id=self._id("seed"),
                                  scale=4)
            self.random_seed = ToolButton(RANDOM_SEED, elem_id=self._id("random_seed"),
                                          tooltip="Set seed to -1, which will cause a new random number to be used "
                                                  "every time")
            self.reuse_seed = ToolButton(REUSE_SEED, elem_id=self._id("reuse_seed"),
                                         tooltip="Reuse seed from last generation")
        self.random_seed.click(fn=None, js="() => -1", outputs=[self.seed], queue=False, show_progress="hidden")

    def build_override_settings(self) -> None:
        self.override_settings = DropdownMulti(label="Override settings", choices=[], value=[], visible=False,
                                               elem_id=self._id("override_settings"), allow_custom_value=True)

    def build_scripts(self, runner: Any) -> None:
        """The tab's scripts: always-on scripts' controls, then the "Script" dropdown and the chosen script's
        controls (A1111's layout). ``runner`` is the tab's ``ScriptRunner``; None leaves the form without scripts."""
        self.script_runner = runner
        if runner is None:
            return
        with gr.Column(elem_id=self._id("script_container")):
            self.script_inputs = list(runner.setup_ui())
        self.extra_paste_fields += [f for f in runner.infotext_fields
                                    if isinstance(f, tuple | list) and len(f) == 2 and f[0] is not None]

    def script_input_components(self) -> set[Any]:
        return {c for c in self.script_inputs if isinstance(c, gr.blocks.Block)}

    def attach_scripts(self, p: Any, data: dict[Any, Any]) -> Any:
        """Give ``p`` the tab's scripts, their control values (``p.script_args``) and the callback registry."""
        if self.script_runner is None:
            return p
        values = [data[c] if isinstance(c, gr.blocks.Block) and c in data else getattr(c, "value", None)
                  for c in self.script_inputs]
        p.callbacks = script_callbacks
        p.scripts = self.script_runner
        p.script_args = values  # with both set, the always-on scripts' setup() runs
        return p

    # results ----------------------------------------------------------------------------------------------------
    def build_results(self) -> None:
        with gr.Column(elem_id=self._id("results"), elem_classes=["results"]):
            self.progress = gr.HTML("", elem_id=self._id("progress"), elem_classes=["progress-area"])
            self.preview = gr.Image(label="Preview", visible=False, interactive=False, elem_id=self._id("preview"),
                                    type="pil", format="png", show_label=False, height=360)
            self.gallery = gr.Gallery(label="Output", show_label=False, elem_id=self._id("gallery"), columns=4,
                                      format="png", object_fit="contain", interactive=False, preview=False,
                                      height="auto")
            self.generation_info = gr.HTML("", elem_id=self._id("generation_info"), elem_classes=["infotext-html"])
            self.html_log = gr.HTML("", elem_id=self._id("html_log"), elem_classes=["html-log"])
            self.results = gr.State({})

    # values -----------------------------------------------------------------------------------------------------
    def processing_kwargs(self, data: dict[Any, Any]) -> dict[str, Any]:
        """The common ``StableDiffusionProcessing`` arguments from the submitted values (checked)."""
        from modules.infotext import create_override_settings_dict

        width, height = int(data[self.width]), int(data[self.height])
        check_size(width, height)
        steps, n_iter, batch_size = int(data[self.steps]), int(data[self.batch_count]), int(data[self.batch_size])
        if steps < 1 or n_iter < 1 or batch_size < 1:
            raise InvalidRequest("Sampling steps, batch count and batch size must be at least 1.",
                                 "Move the sliders to 1 or more.")
        seed = data[self.seed]
        return {
            "prompt": data[self.prompt] or "",
            "negative_prompt": data[self.negative_prompt] or "",
            "styles": list(data[self.styles] or []),
            "sampler_name": data[self.sampler],
            "scheduler": data[self.scheduler],
            "steps": steps,
            "cfg_scale": float(data[self.cfg_scale]),
            "width": width,
            "height": height,
            "n_iter": n_iter,
            "batch_size": batch_size,
            "seed": int(seed) if seed not in (None, "") else -1,
            "override_settings": create_override_settings_dict(data[self.override_settings] or [], self.env.ctx.opts),
        }

    def inputs(self) -> set[Any]:
        return {self.prompt, self.negative_prompt, self.styles, self.sampler, self.scheduler, self.steps,
                self.cfg_scale, self.width, self.height, self.batch_count, self.batch_size, self.seed,
                self.override_settings}

    def paste_fields(self) -> list[tuple[Any, Any]]:
        """A1111's paste fields of the form: infotext key (or function of the parsed infotext) → component."""
        return [
            (self.prompt, "Prompt"),
            (self.negative_prompt, "Negative prompt"),
            (self.steps, "Steps"),
            (self.sampler, sampler_from_params),
            (self.scheduler, scheduler_from_params),
            (self.cfg_scale, "CFG scale"),
            (self.seed, "Seed"),
            (self.width, "Size-1"),
            (self.height, "Size-2"),
            (self.batch_size, "Batch size"),
            (self.styles, lambda params: params.get("Styles array")),
            (self.override_settings, self._override_settings_update),
            *self.extra_paste_fields,
        ]

    def _override_settings_update(self, params: dict[str, Any]) -> Any:
        """Settings named in the infotext that differ from the current ones, as the override picker's entries."""
        from modules.infotext import get_override_settings

        pairs = get_override_settings(params, opts=self.env.ctx.opts)
        values = [f"{label}: {value}" for label, _, value in pairs]
        return gr.Dropdown(choices=values, value=values, visible=bool(values))

    # events -----------------------------------------------------------------------------------------------------
    def connect(self, make_processing: Callable[[dict[Any, Any]], Any], extra_inputs: set[Any] | None = None,
                kind: str | None = None) -> None:
        """Wire Generate (streaming), Interrupt, Skip, the token counters, seed reuse and the gallery selection."""
        kind = kind or self.tabname
        outputs = [self.gallery, self.results, self.generation_info, self.html_log, self.progress, self.preview]
        handler = self._generate_handler(lambda data: self.attach_scripts(make_processing(data), data), kind)
        inputs = self.inputs() | (extra_inputs or set()) | self.script_input_components()
        self.generate.click(handler, inputs=inputs, outputs=outputs,
                            show_progress="hidden", concurrency_limit=None, api_visibility="private")
        queue = self.env.ctx.queue
        self.interrupt.click(lambda: queue.interrupt(), queue=False, show_progress="hidden",
                             api_visibility="private")
        self.skip.click(lambda: queue.skip(), queue=False, show_progress="hidden", api_visibility="private")
        self._connect_token_counters()
        self.gallery.select(_select_image, inputs=[self.results], outputs=[self.results, self.generation_info],
                            show_progress="hidden", api_visibility="private")
        self.reuse_seed.click(_reused_seed, inputs=[self.results, self.seed], outputs=[self.seed],
                              show_progress="hidden", api_visibility="private")
        self.styles_refresh.click(self._refresh_styles, outputs=[self.styles], show_progress="hidden",
                                  api_visibility="private")

    def _refresh_styles(self) -> Any:
        if self.env.styles is None:
            return gr.skip()
        self.env.styles.reload()
        return gr.Dropdown(choices=list(self.env.styles.styles))

    def _connect_token_counters(self) -> None:
        env = self.env
        for box, counter, negative in ((self.prompt, self.token_counter, False),
                                       (self.negative_prompt, self.negative_token_counter, True)):
            def update(text: str, styles: list[str], steps: Any, negative: bool = negative) -> str:
                return token_counter_html(env, text, styles, steps, negative)

            for trigger in (box.change, self.styles.change):
                trigger(update, inputs=[box, self.styles, self.steps], outputs=[counter], show_progress="hidden",
                        trigger_mode="always_last", api_visibility="private")

    def _generate_handler(self, make_processing: Callable[[dict[Any, Any]], Any],
                          kind: str) -> Callable[[dict[Any, Any]], Iterator[dict[Any, Any]]]:
        env = self.env

        def generate(data: dict[Any, Any]) -> Iterator[dict[Any, Any]]:
            hidden_preview = gr.Image(value=None, visible=False)
            queue = env.ctx.queue
            try:
                p = make_processing(data)
                job = queue.submit(lambda: run_processing(env, p), kind=kind, description=kind)
            except Exception as exc:  # bad input (or a stopped queue): a visible message, nothing queued
                yield self._failure(exc, hidden_preview)
                return
            yield {self.html_log: "", self.progress: ui_progress.progress_html(queue, job),
                   self.preview: hidden_preview}
            for event in ui_progress.follow(queue, job):
                if isinstance(event, ui_progress.Tick):
                    update: dict[Any, Any] = {self.progress: event.html}
                    if event.preview is not None:
                        update[self.preview] = gr.Image(value=event.preview, visible=True)
                    yield update
                elif event.error is not None:
                    yield self._failure(event.error, hidden_preview)
                else:
                    yield self._success(event.result, event.elapsed, hidden_preview)

        generate.__name__ = f"{kind}_generate"
        return generate

    def _failure(self, exc: BaseException, hidden_preview: Any) -> dict[Any, Any]:
        message, hint = error_message(exc)
        if not isinstance(exc, AtelierError):
            log.error("%s generation failed", self.tabname, exc_info=exc)
        gr.Warning(f"{message} {hint}".strip())
        return {self.html_log: error_html(exc), self.progress: "", self.preview: hidden_preview}

    def _success(self, processed: Any, elapsed: float, hidden_preview: Any) -> dict[Any, Any]:
        infotexts = list(processed.infotexts or [])
        first = int(processed.index_of_first_image or 0)
        shown = first if len(processed.images) > first else 0
        results = {"infotexts": infotexts, "index_of_first_image": first, "selected": shown,
                   "seeds": list(processed.all_seeds or [])}
        log_html = ui_progress.time_taken_html(elapsed)
        if not processed.images:
            log_html = "<p class='atelier-notice'>No images were generated (interrupted).</p>" + log_html
        return {self.gallery: list(processed.images), self.results: results,
                self.generation_info: infotext_html(infotexts[shown] if shown < len(infotexts) else processed.info),
                self.html_log: log_html, self.progress: "", self.preview: hidden_preview}


def _select_image(results: dict[str, Any], evt: gr.SelectData) -> tuple[dict[str, Any], str]:
    """Show the infotext of the picture clicked in the gallery and remember it for the recycle button."""
    infotexts = (results or {}).get("infotexts") or []
    index = evt.index if isinstance(evt.index, int) else 0
    if not 0 <= index < len(infotexts):
        return results, gr.skip()
    return {**results, "selected": index}, infotext_html(infotexts[index])


def _reused_seed(results: dict[str, Any], current: Any) -> Any:
    """The seed of the selected (else the first) shown picture; the current value when nothing was generated."""
    infotexts = (results or {}).get("infotexts") or []
    if not infotexts:
        return current
    index = results.get("selected", 0)
    text = infotexts[index] if 0 <= index < len(infotexts) else infotexts[0]
    seed = parse_infotext(text).get("Seed")
    try:
        return int(seed)
    except (TypeError, ValueError):
        return current
