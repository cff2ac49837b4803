"""Browser tests of the Extras, Settings and Extensions tabs on the real app (fixtures in tests/ui/conftest.py).

Each test restores what it changes on the shared server (settings, extension folders), so the order does not matter.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from modules.cmd_args import parse_args
from modules.jobs import JobQueue
from modules.options import Options
from modules.paths import BUILTIN_EXTENSIONS_DIR, paths_from_args
from modules.shared_options import options_templates
from modules.ui_extras import BATCH, SCALE_BY, SINGLE, run_extras_ui


def open_tab(page: Any, name: str) -> None:
    page.click(f"#tab_{name}-button")
    page.locator(f"#tab_{name}").wait_for(state="visible")


def pick_dropdown(page: Any, elem_id: str, choice: str) -> None:
    page.locator(f"#{elem_id} input").click()
    page.locator(f'#{elem_id} li[role="option"][aria-label="{choice}"]').click()
    assert page.locator(f"#{elem_id} input").input_value() == choice


@pytest.fixture
def restore_settings(ui_server: Any) -> Iterator[None]:
    """Put the settings (memory and config.json) back as they were after the test."""
    opts = ui_server.ctx.opts
    saved = dict(opts.data)
    settings_file = Path(ui_server.paths.settings_file)
    before = settings_file.read_bytes() if settings_file.exists() else None
    yield
    opts.data.clear()
    opts.data.update(saved)
    if before is None:
        settings_file.unlink(missing_ok=True)
    else:
        settings_file.write_bytes(before)


# Settings -------------------------------------------------------------------------------------------------------------
def test_settings_apply_changes_and_saves_config(page: Any, ui_server: Any, restore_settings: None) -> None:
    opts = ui_server.ctx.opts
    assert opts.jpeg_quality != 93 and opts.save_txt is False
    open_tab(page, "settings")
    page.locator("#settings_sections label", has_text="Saving images/grids").click()
    page.locator("#setting_jpeg_quality input").fill("93")
    page.locator("#setting_save_txt input[type=checkbox]").check()
    page.click("#settings_submit")

    result = page.locator("#settings_result p")
    result.wait_for()
    assert result.inner_text() == "2 settings changed: save_txt, jpeg_quality."
    assert opts.jpeg_quality == 93 and opts.save_txt is True
    saved = json.loads((ui_server.data_dir / "config.json").read_text(encoding="utf8"))
    assert saved["jpeg_quality"] == 93 and saved["save_txt"] is True


def test_settings_sections_switch_pages(page: Any) -> None:
    open_tab(page, "settings")
    assert page.locator("#setting_jpeg_quality").is_visible()
    page.locator("#settings_sections label", has_text="Sampler parameters").click()
    page.locator("#setting_eta_ddim").wait_for(state="visible")
    page.locator("#setting_jpeg_quality").wait_for(state="hidden")
    page.locator("#settings_sections label", has_text="Show all pages").click()
    page.locator("#setting_jpeg_quality").wait_for(state="visible")
    assert page.locator("#setting_eta_ddim").is_visible()


# Extras ---------------------------------------------------------------------------------------------------------------
def _saved_extras(ui_server: Any) -> set[Path]:
    folder = ui_server.data_dir / "outputs" / "extras-images"
    return set(folder.rglob("*.png")) if folder.exists() else set()


def test_extras_scale_by_two_with_lanczos(page: Any, ui_server: Any, tmp_path: Path) -> None:
    source = tmp_path / "source.png"
    Image.new("RGB", (32, 32), (200, 30, 60)).save(source)
    before = _saved_extras(ui_server)

    open_tab(page, "extras")
    page.locator("#extras_image input[type=file]").set_input_files(str(source))
    page.locator("#extras_image img").wait_for()
    page.locator("#extras_upscaling_resize input[type=number]").fill("2")
    pick_dropdown(page, "extras_upscaler_1", "Lanczos")
    page.click("#extras_generate")

    shown = page.locator("#extras_gallery img").first
    shown.wait_for()
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=shown.element_handle())
    assert shown.evaluate("img => [img.naturalWidth, img.naturalHeight]") == [64, 64]
    page.locator("#html_info_extras").get_by_text("Postprocess upscaler: Lanczos").wait_for()

    new_files = _saved_extras(ui_server) - before
    assert len(new_files) == 1
    with Image.open(new_files.pop()) as saved:
        assert saved.size == (64, 64)
        assert saved.getpixel((32, 32)) == (200, 30, 60)
        assert saved.info["extras"] == "Postprocess upscale by: 2, Postprocess upscaler: Lanczos"


def test_extras_batch_scale_to_with_crop(page: Any, ui_server: Any, tmp_path: Path) -> None:
    sources = [tmp_path / "wide.png", tmp_path / "tall.png"]
    Image.new("RGB", (32, 16), (10, 120, 10)).save(sources[0])
    Image.new("RGB", (16, 32), (10, 10, 120)).save(sources[1])
    before = _saved_extras(ui_server)

    open_tab(page, "extras")
    page.click("#extras_batch_process_tab-button")
    page.locator("#extras_image_batch input[type=file]").set_input_files([str(p) for p in sources])
    for source in sources:
        page.locator(f'#extras_image_batch td.filename[aria-label="{source.name}"]').wait_for()
    page.click("#extras_scale_to_tab-button")
    page.locator("#extras_upscaling_resize_w input").fill("48")
    page.locator("#extras_upscaling_resize_h input").fill("40")
    pick_dropdown(page, "extras_upscaler_1", "Nearest")
    page.click("#extras_generate")

    page.locator("#html_info_extras .extras-infotext").nth(1).wait_for()
    assert page.locator("#extras_gallery img").count() == 2
    new_files = _saved_extras(ui_server) - before
    assert len(new_files) == 2
    for path in new_files:
        with Image.open(path) as saved:
            assert saved.size == (48, 40)
            assert "Postprocess upscale to: 48x40" in saved.info["extras"]


def test_extras_without_an_image_shows_a_message(page: Any, ui_server: Any) -> None:
    before = _saved_extras(ui_server)
    open_tab(page, "extras")
    page.click("#extras_generate")
    page.locator("#html_info_extras .extras-error").get_by_text("No image to process.").wait_for()
    assert page.locator("#extras_gallery img").count() == 0
    assert _saved_extras(ui_server) == before


@pytest.fixture
def extras_ctx(tmp_path: Path) -> Iterator[Any]:
    """The Extras handler's context without a server (the handler is plain Python)."""
    from types import SimpleNamespace

    args = parse_args(["--data-dir", str(tmp_path)], environ={})
    ctx = SimpleNamespace(opts=Options(options_templates), paths=paths_from_args(args), args=args, queue=JobQueue())
    yield ctx
    ctx.queue.shutdown(10)


def test_extras_errors_are_messages_not_tracebacks(extras_ctx: Any, tmp_path: Path) -> None:
    """No browser needed: an unknown upscaler and an unreadable batch file come back as visible messages."""
    image = Image.new("RGB", (32, 32))
    gallery, info = run_extras_ui(extras_ctx, SINGLE, image, None, SCALE_BY, 2, 512, 512, True, "NoSuchUpscaler",
                                  "None", 0)
    assert gallery == [] and "extras-error" in info and "NoSuchUpscaler" in info and "Traceback" not in info

    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    gallery, info = run_extras_ui(extras_ctx, BATCH, None, [str(broken)], SCALE_BY, 2, 512, 512, True, "Lanczos",
                                  "None", 0)
    assert gallery == [] and "broken.png is not an image" in info
    assert not (tmp_path / "outputs" / "extras-images").exists()


def test_extras_saving_follows_samples_save(extras_ctx: Any, tmp_path: Path) -> None:
    extras_ctx.opts.set("samples_save", False)
    image = Image.new("RGB", (16, 16))
    gallery, info = run_extras_ui(extras_ctx, SINGLE, image, None, SCALE_BY, 2, 512, 512, True, "Nearest", "None", 0)
    assert [g.size for g in gallery] == [(32, 32)] and "Saved:" not in info
    assert not list(tmp_path.rglob("*.png"))
    extras_ctx.opts.set("samples_save", True)
    _, info = run_extras_ui(extras_ctx, SINGLE, image, None, SCALE_BY, 2, 512, 512, True, "Nearest", "None", 0)
    saved = list((tmp_path / "outputs" / "extras-images").glob("*.png"))
    assert len(saved) == 1 and f"Saved: {saved[0]}" in info


# Extensions -----------------------------------------------------------------------------------------------------------
@pytest.fixture
def dummy_extension(ui_server: Any) -> Iterator[str]:
    folder = Path(ui_server.paths.extensions_dir) / "atelier-dummy-extension"
    (folder / "scripts").mkdir(parents=True)
    yield folder.name
    shutil.rmtree(folder)


def test_extensions_installed_list(page: Any, ui_server: Any, dummy_extension: str) -> None:
    open_tab(page, "extensions")
    page.click("#extensions_refresh")
    table = page.locator("#extensions_installed_table")
    table.locator(f'tr[data-extension="{dummy_extension}"]').wait_for()
    builtins = sorted(p.name for p in BUILTIN_EXTENSIONS_DIR.iterdir() if p.is_dir() and not p.name.startswith("."))
    for name in [*builtins, dummy_extension]:
        assert table.locator(f'tr[data-extension="{name}"]').count() == 1, name
    row = table.locator(f'tr[data-extension="{dummy_extension}"] td')
    assert row.nth(1).inner_text() == "yes"
    assert page.locator("#extensions_enabled label", has_text=dummy_extension).count() == 1


def test_extensions_apply_disables_an_extension(page: Any, ui_server: Any, dummy_extension: str,
                                                restore_settings: None) -> None:
    open_tab(page, "extensions")
    page.click("#extensions_refresh")
    box = page.locator("#extensions_enabled label", has_text=dummy_extension).locator("input")
    box.wait_for()
    box.uncheck()
    page.click("#extensions_apply")
    page.locator("#extensions_apply_result").get_by_text("Saved.").wait_for()
    row = page.locator(f'#extensions_installed_table tr[data-extension="{dummy_extension}"] td')
    assert row.nth(1).inner_text() == "no"
    assert dummy_extension in ui_server.ctx.opts.disabled_extensions
    saved = json.loads((ui_server.data_dir / "config.json").read_text(encoding="utf8"))
    assert dummy_extension in saved["disabled_extensions"]


def test_install_from_url_asks_for_a_url(page: Any) -> None:
    open_tab(page, "extensions")
    page.click("#extensions_install_tab-button")
    page.click("#extension_install_button")
    page.locator("#extension_install_result").get_by_text("Enter the URL").wait_for()
