"""The built-in settings, with A1111's keys and defaults so saved configs, API calls and extensions agree."""

from __future__ import annotations

from modules import localization
from modules.options import OptionInfo, options_section

SAVING = ("saving-images", "Saving images/grids")
PATHS = ("saving-paths", "Paths for saving")
SD = ("sd", "Stable Diffusion")
SAMPLER = ("sampler-params", "Sampler parameters")
UI = ("ui", "User interface")
LIMITS = ("limits", "Limits")
LIVE = ("ui_live_preview", "Live previews")
SYSTEM = ("system", "System")
EXTENSIONS = ("extensions", "Extensions")

options_templates: dict[str, OptionInfo] = {}

options_templates.update(options_section(SAVING, {
    "samples_save": OptionInfo(True, "Always save all generated images"),
    "samples_format": OptionInfo("png", "File format for images"),
    "samples_filename_pattern": OptionInfo("", "Images filename pattern"),
    "save_images_add_number": OptionInfo(True, "Add number to filename when saving"),
    "grid_save": OptionInfo(True, "Always save all generated image grids"),
    "grid_format": OptionInfo("png", "File format for grids"),
    "enable_pnginfo": OptionInfo(True, "Save text information about generation parameters as chunks to png files"),
    "save_txt": OptionInfo(False, "Create a text file next to every image with generation parameters"),
    "jpeg_quality": OptionInfo(80, "Quality for saved jpeg images"),
}))

options_templates.update(options_section(PATHS, {
    "outdir_samples": OptionInfo("", "Output directory for images; if empty, defaults to three directories below"),
    "outdir_txt2img_samples": OptionInfo("outputs/txt2img-images", "Output directory for txt2img images"),
    "outdir_img2img_samples": OptionInfo("outputs/img2img-images", "Output directory for img2img images"),
    "outdir_extras_samples": OptionInfo("outputs/extras-images", "Output directory for images from extras tab"),
    "outdir_txt2img_grids": OptionInfo("outputs/txt2img-grids", "Output directory for txt2img grids"),
    "outdir_img2img_grids": OptionInfo("outputs/img2img-grids", "Output directory for img2img grids"),
    "save_to_dirs": OptionInfo(True, "Save images to a subdirectory"),
    "directories_filename_pattern": OptionInfo("[date]", "Directory name pattern"),
}))

options_templates.update(options_section(SD, {
    "sd_model_checkpoint": OptionInfo("", "Stable Diffusion checkpoint"),
    "sd_checkpoints_limit": OptionInfo(1, "Maximum number of checkpoints loaded at the same time"),
    "sd_vae": OptionInfo("Automatic", "SD VAE"),
    "sd_vae_overrides_per_model_preferences": OptionInfo(True, "Selected VAE overrides per-model preferences"),
    "CLIP_stop_at_last_layers": OptionInfo(1, "Clip skip", infotext="Clip skip"),
    "emphasis": OptionInfo("Original", "Emphasis mode", infotext="Emphasis"),
    "comma_padding_backtrack": OptionInfo(20, "Prompt word wrap length limit"),
    "batch_cond_uncond": OptionInfo(True, "Batch cond/uncond"),
    "persistent_cond_cache": OptionInfo(True, "Persistent cond cache"),
    "img2img_fix_steps": OptionInfo(False, "With img2img, do exactly the amount of steps the slider specifies"),
    "initial_noise_multiplier": OptionInfo(1.0, "Noise multiplier for img2img"),
    "auto_vae_precision": OptionInfo(True, "Automatically revert VAE to 32-bit floats on NaN"),
    "randn_source": OptionInfo("GPU", "Random number generator source", infotext="RNG"),
    "tiling": OptionInfo(False, "Tiling", infotext="Tiling"),
}))

options_templates.update(options_section(SAMPLER, {
    "eta_ddim": OptionInfo(0.0, "Eta for DDIM", infotext="Eta DDIM"),
    "eta_ancestral": OptionInfo(1.0, "Eta for k-diffusion samplers", infotext="Eta"),
    "ddim_discretize": OptionInfo("uniform", "img2img DDIM discretize"),
    "s_churn": OptionInfo(0.0, "sigma churn", infotext="Sigma churn"),
    "s_tmin": OptionInfo(0.0, "sigma tmin", infotext="Sigma tmin"),
    "s_tmax": OptionInfo(0.0, "sigma tmax", infotext="Sigma tmax"),
    "s_noise": OptionInfo(1.0, "sigma noise", infotext="Sigma noise"),
    "sigma_min": OptionInfo(0.0, "sigma min", infotext="Schedule min sigma"),
    "sigma_max": OptionInfo(0.0, "sigma max", infotext="Schedule max sigma"),
    "rho": OptionInfo(0.0, "rho", infotext="Schedule rho"),
    "eta_noise_seed_delta": OptionInfo(0, "Eta noise seed delta", infotext="ENSD"),
    "always_discard_next_to_last_sigma": OptionInfo(False, "Always discard next-to-last sigma"),
    "sgm_noise_multiplier": OptionInfo(False, "SGM noise multiplier"),
    "uni_pc_variant": OptionInfo("bh1", "UniPC variant"),
    "uni_pc_skip_type": OptionInfo("time_uniform", "UniPC skip type"),
    "uni_pc_order": OptionInfo(3, "UniPC order"),
    "uni_pc_lower_order_final": OptionInfo(True, "UniPC lower order final"),
}))

options_templates.update(options_section(LIVE, {
    "live_previews_enable": OptionInfo(True, "Show live previews of the created image"),
    "show_progress_every_n_steps": OptionInfo(10, "Live preview display period (in sampling steps)"),
    "show_progress_type": OptionInfo("Approx cheap", "Live preview method",
                                     component_args={"choices": ["Full", "Approx NN", "Approx cheap", "TAESD"]}),
    "live_preview_content": OptionInfo("Prompt", "Live preview subject",
                                       component_args={"choices": ["Combined", "Prompt", "Negative prompt"]}),
}))

options_templates.update(options_section(LIMITS, {
    "api_max_steps": OptionInfo(150, "Maximum sampling steps per request"),
    "api_max_batch_size": OptionInfo(8, "Maximum batch size per request"),
    "api_max_n_iter": OptionInfo(100, "Maximum batch count per request"),
    "api_max_pixels": OptionInfo(2048 * 2048, "Maximum width × height of a generated image"),
}))

options_templates.update(options_section(UI, {
    "add_model_hash_to_info": OptionInfo(True, "Add model hash to infotext"),
    "add_model_name_to_info": OptionInfo(True, "Add model name to infotext"),
    "add_version_to_infotext": OptionInfo(True, "Add program version to infotext"),
    "return_grid": OptionInfo(True, "Show grid in gallery"),
    "localization": OptionInfo(localization.NONE, "Localization",
                               component_args=localization.setting_choices).needs_reload_ui(),
}))

options_templates.update(options_section(SYSTEM, {
    "api_enable_requests": OptionInfo(True, "Allow http(s) URLs for input images in API", restrict_api=True),
    "api_forbid_local_requests": OptionInfo(True, "Forbid URLs to local resources", restrict_api=True),
    "print_hypernet_extra": OptionInfo(False, "Print extra hypernetwork information to console"),
}))

options_templates.update(options_section(EXTENSIONS, {
    "disabled_extensions": OptionInfo([], "Disabled extensions"),
    "disable_all_extensions": OptionInfo("none", "Disable all extensions (none, extra, all)"),
}))
