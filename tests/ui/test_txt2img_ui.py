"""txt2img in a real browser: generate with a tiny SD1 checkpoint, the saved PNG, interrupt, token counter, errors."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.ui.conftest import number_value, set_number, textbox

expect = pytest.importorskip("playwright.sync_api").expect

GENERATION_TIMEOUT_MS = 120_000


def saved_images(data_dir: Path) -> set[Path]:
    return set((data_dir / "outputs" / "txt2img-images").rglob("*.png"))


def fill_form(page: Any, prompt: str, *, size: int = 32, steps: int = 2, seed: int = 123, batch_count: int = 1) -> None:
    textbox(page, "txt2img_prompt").fill(prompt)
    set_number(page, "txt2img_width", size)
    set_number(page, "txt2img_height", size)
    set_number(page, "txt2img_steps", steps)
    set_number(page, "txt2img_batch_count", batch_count)
    page.locator("#txt2img_seed input").fill(str(seed))
    page.locator("#txt2img_seed input").blur()


def wait_for_result(page: Any) -> None:
    """Generation has ended: the progress area is empty and the log says how long it took (or shows an error)."""
    expect(page.locator("#txt2img_html_log")).to_contain_text(re.compile("Time taken|Error"),
                                                               timeout=GENERATION_TIMEOUT_MS)
    expect(page.locator("#txt2img_progress")).to_have_text("", timeout=10_000)


def test_generate_shows_image_and_infotext_that_match_the_saved_png(page: Any, ui_server: Any) -> None:
    before = saved_images(ui_server.data_dir)
    fill_form(page, "a red cube on a table", seed=123)
    page.locator("#txt2img_generate").click()
    wait_for_result(page)

    expect(page.locator("#txt2img_gallery img").first).to_be_visible()
    info = page.locator("#txt2img_generation_info")
    expect(info).to_contain_text("a red cube on a table")
    expect(info).to_contain_text("Seed: 123")
    expect(info).to_contain_text("Size: 32x32")
    expect(info).to_contain_text("Steps: 2")

    new = saved_images(ui_server.data_dir) - before
    assert len(new) == 1, new
    with Image.open(new.pop()) as saved:
        assert saved.size == (32, 32)
        saved_text = saved.info["parameters"]
    assert info.inner_text().strip() == saved_text.strip()


def test_interrupt_stops_a_long_job_and_the_ui_stays_usable(page: Any, ui_server: Any) -> None:
    before = saved_images(ui_server.data_dir)
    fill_form(page, "interrupt me", steps=150, batch_count=40, seed=7)
    page.locator("#txt2img_generate").click()
    expect(page.locator("#txt2img_progress [data-status='running']")).to_be_visible(timeout=60_000)
    started = time.monotonic()
    page.locator("#txt2img_interrupt").click()
    wait_for_result(page)
    assert time.monotonic() - started < 30
    assert len(saved_images(ui_server.data_dir) - before) < 40
    assert ui_server.ctx.queue.current is None

    # usable afterwards: a new random-seed job runs, and recycle puts its seed into the field
    fill_form(page, "after the interrupt", seed=-1)
    page.locator("#txt2img_generate").click()
    expect(page.locator("#txt2img_generation_info")).to_contain_text("after the interrupt",
                                                                      timeout=GENERATION_TIMEOUT_MS)
    shown_seed = re.search(r"Seed: (\d+)", page.locator("#txt2img_generation_info").inner_text()).group(1)
    page.locator("#txt2img_reuse_seed").click()
    expect(page.locator("#txt2img_seed input")).to_have_value(shown_seed)
    page.locator("#txt2img_random_seed").click()
    expect(page.locator("#txt2img_seed input")).to_have_value("-1")


def test_hires_fix_accordion_enables_the_second_pass(page: Any, ui_server: Any) -> None:
    before = saved_images(ui_server.data_dir)
    fill_form(page, "a tiny hires test", seed=11)
    page.locator("#txt2img_hr .label-wrap").first.click()
    expect(page.locator("#txt2img_hr_scale")).to_be_visible()
    set_number(page, "txt2img_hr_scale", 2)
    set_number(page, "txt2img_hires_steps", 1)
    page.locator("#txt2img_generate").click()
    wait_for_result(page)
    info = page.locator("#txt2img_generation_info")
    expect(info).to_contain_text("Hires upscale: 2")
    expect(info).to_contain_text("Hires steps: 1")
    (path,) = saved_images(ui_server.data_dir) - before
    with Image.open(path) as saved:
        assert saved.size == (64, 64)

    page.locator("#txt2img_hr .label-wrap").first.click()  # closed again: a plain job
    expect(page.locator("#txt2img_hr_scale")).to_be_hidden()
    page.locator("#txt2img_generate").click()
    expect(info).not_to_contain_text("Hires upscale", timeout=GENERATION_TIMEOUT_MS)


def test_styles_apply_to_the_counter_and_the_generated_prompt(page: Any, ui_server: Any) -> None:
    styles_file = Path(ui_server.paths.styles_file)
    styles_file.write_text('name,prompt,negative_prompt\n"Metal","{prompt}, shiny chrome metal",""\n',
                           encoding="utf-8")
    try:
        page.locator("#txt2img_styles_refresh").click()
        fill_form(page, "a cube", seed=3)
        expect(page.locator("#txt2img_token_counter")).to_have_text("2/75")
        choice = page.locator("#txt2img_styles input")
        choice.click()
        page.get_by_role("option", name="Metal").click()
        expect(page.locator("#txt2img_token_counter")).to_have_text("6/75")
        page.locator("#txt2img_generate").click()
        expect(page.locator("#txt2img_generation_info")).to_contain_text("a cube, shiny chrome metal",
                                                                          timeout=GENERATION_TIMEOUT_MS)
    finally:
        styles_file.unlink(missing_ok=True)


def test_checkpoint_dropdown_sets_and_saves_the_setting(page: Any, ui_server: Any) -> None:
    from tests.sd.factory import write_tiny_checkpoint

    ctx = ui_server.ctx
    folder = Path(ui_server.args.ckpt_dir)
    original = ctx.opts.sd_model_checkpoint
    extra = write_tiny_checkpoint("sd1", folder, name="second-model", seed=1)
    try:
        page.locator("#refresh_sd_model_checkpoint").click()
        dropdown = page.locator("#setting_sd_model_checkpoint input")
        dropdown.click()
        page.get_by_role("option", name=re.compile("second-model")).click()
        deadline = time.monotonic() + 10
        while "second-model" not in ctx.opts.sd_model_checkpoint and time.monotonic() < deadline:
            time.sleep(0.1)
        assert ctx.opts.sd_model_checkpoint.startswith("second-model.safetensors")
        saved = Path(ui_server.paths.settings_file).read_text(encoding="utf8")
        assert "second-model.safetensors" in saved
        assert ctx.model_cache is None or ctx.model_cache.info is None or "second" not in ctx.model_cache.info.title
    finally:
        ctx.opts.set("sd_model_checkpoint", original)
        extra.unlink()
        ctx.refresh_checkpoints()


def test_token_counter_counts_tokens_and_grows_by_chunks(page: Any) -> None:
    box = textbox(page, "txt2img_prompt")
    box.fill("a red cube")
    expect(page.locator("#txt2img_token_counter")).to_have_text("3/75")
    box.fill(" ".join(["cat"] * 80))
    expect(page.locator("#txt2img_token_counter")).to_have_text("80/150")
    textbox(page, "txt2img_neg_prompt").fill("blurry, ugly")
    expect(page.locator("#txt2img_negative_token_counter")).to_have_text("3/75")


def test_missing_checkpoint_shows_a_message_and_ctrl_enter_generates(page: Any, ui_server: Any,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ui_server.ctx, "checkpoints", {})
    fill_form(page, "no model here")
    textbox(page, "txt2img_prompt").press("Control+Enter")
    log = page.locator("#txt2img_html_log")
    expect(log).to_contain_text("No checkpoint found", timeout=GENERATION_TIMEOUT_MS)
    expect(log).to_contain_text("models/Stable-diffusion")
    expect(page.locator("#txt2img_progress")).to_have_text("")
    assert number_value(page, "txt2img_steps") == 2


# progress helpers (no browser) ------------------------------------------------------------------------------------
def test_progress_html_reports_queue_position_then_steps_and_follow_ends_with_the_outcome() -> None:
    import threading

    from modules.jobs import JobQueue
    from modules.ui_progress import Outcome, Tick, follow, progress_html

    queue = JobQueue()
    gate = threading.Event()
    first = queue.submit(lambda: gate.wait(10) and "first done", kind="txt2img")
    second = queue.submit(lambda: 1 / 0, kind="txt2img")
    deadline = time.monotonic() + 10
    while queue.current is not first and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        assert "In queue: 1 task(s) ahead" in progress_html(queue, second)
        state = queue.state
        state.job_count, state.job_no, state.sampling_steps, state.sampling_step = 2, 0, 20, 5
        running = progress_html(queue, first)
        assert "data-status='running'" in running and "Step 5/20" in running and "Batch 1/2" in running
        assert re.search(r"\b13%", running)  # 0.01 + 1/2 * 5/20
        ticks = follow(queue, first, poll=0.01)
        assert isinstance(next(ticks), Tick)
        gate.set()
        *_, outcome = ticks
        assert isinstance(outcome, Outcome) and outcome.result == "first done" and outcome.error is None
        *_, failed = follow(queue, second, poll=0.01)
        assert isinstance(failed.error, ZeroDivisionError)
    finally:
        gate.set()
        queue.shutdown(5)
