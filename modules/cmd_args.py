"""Command-line flags with AUTOMATIC1111's names, defaults and meaning.

Users come with `webui-user` habits and scripts full of A1111 flags, so the names are kept; the parser is grouped
so `--help` reads like a manual. Unknown flags stop the start with exit code 2 and the closest valid names, and
A1111's legacy no-op flags are accepted with a one-line notice instead of an error.

`COMMANDLINE_ARGS` (environment) is appended to argv, as in A1111. Extensions' `preload(parser)` functions get the
parser before parsing (see `build_parser` and `parse_args`).
"""

from __future__ import annotations

import argparse
import difflib
import logging
import os
import shlex
import sys
from collections.abc import Callable, Sequence

log = logging.getLogger(__name__)

# Flags A1111 still accepts but that do nothing any more; we accept them too and say so once.
LEGACY_NOOP_FLAGS: tuple[str, ...] = (
    "--always-batch-cond-uncond",
    "--unload-gfpgan",
    "--deepdanbooru",
    "--show-negative-prompt",
    "--gradio-queue",
    "--add-stop-route",
    "--enable-console-prompts",
)
LEGACY_NOOP_FLAGS_WITH_VALUE: tuple[str, ...] = (
    "--max-batch-count",
    "--gradio-img2img-tool",
    "--gradio-inpaint-tool",
    "--ngrok-region",
)


class FlagParser(argparse.ArgumentParser):
    """ArgumentParser whose errors name the closest valid flags, so a typo costs seconds, not a search."""

    def error(self, message: str) -> None:  # type: ignore[override]
        hint = ""
        if message.startswith("unrecognized arguments:"):
            unknown = [a for a in message.split(":", 1)[1].split() if a.startswith("-")]
            suggestions = []
            for arg in unknown:
                flag = arg.split("=", 1)[0]
                close = difflib.get_close_matches(flag, self.known_flags(), n=3, cutoff=0.5)
                suggestions.append(f"{flag}: did you mean {', '.join(close)}?" if close else f"{flag}: no similar flag")
            hint = "\n" + "\n".join(suggestions)
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}{hint}\nRun with --help to list every flag.\n")

    def known_flags(self) -> list[str]:
        return [opt for action in self._actions for opt in action.option_strings if opt.startswith("--")]


def _add_launcher_flags(parser: FlagParser) -> None:
    g = parser.add_argument_group("launcher")
    g.add_argument("--skip-install", action="store_true", help="do not install requirements into the venv")
    g.add_argument("--reinstall", action="store_true", help="reinstall requirements even if they look up to date")
    g.add_argument("--skip-prepare-environment", action="store_true", help="skip venv and requirements handling")
    g.add_argument("--skip-python-version-check", action="store_true", help="do not check the Python version")
    g.add_argument("--skip-torch-cuda-test", action="store_true",
                   help="accepted for A1111 compatibility; Atelier never requires CUDA")
    g.add_argument("--reinstall-torch", action="store_true", help="same as --reinstall")
    g.add_argument("--update-all-extensions", action="store_true", help="git pull every extension at start")
    g.add_argument("--loglevel", type=str.upper, default=None, metavar="LEVEL",
                   choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], help="log level (default INFO)")
    g.add_argument("--log-startup", action="store_true", help="log every start-up stage with timings")


def _add_server_flags(parser: FlagParser) -> None:
    g = parser.add_argument_group("server")
    g.add_argument("--listen", action="store_true", help="listen on 0.0.0.0 so other machines can connect")
    g.add_argument("--port", type=int, default=None, help="port (default 7860, or 7861 with --nowebui)")
    g.add_argument("--server-name", type=str, default=None, help="host name or address to bind (overrides --listen)")
    g.add_argument("--api", action="store_true", help="serve the /sdapi/v1 HTTP API beside the UI")
    g.add_argument("--nowebui", action="store_true", help="serve only the HTTP API, no browser UI")
    g.add_argument("--api-auth", type=str, default=None, metavar="USER:PASS[,USER:PASS]",
                   help="HTTP Basic credentials required by the API")
    g.add_argument("--api-log", action="store_true", help="log each API request")
    g.add_argument("--api-server-stop", action="store_true", help="enable the server kill/restart/stop API routes")
    g.add_argument("--timeout-keep-alive", type=int, default=30, help="HTTP keep-alive timeout in API-only mode")
    g.add_argument("--gradio-auth", type=str, default=None, metavar="USER:PASS[,USER:PASS]",
                   help="log-in credentials for the browser UI")
    g.add_argument("--gradio-auth-path", type=str, default=None, metavar="FILE",
                   help="file with UI credentials in the --gradio-auth format, one or more per line")
    g.add_argument("--gradio-allowed-path", action="append", default=[], help="extra path the UI may serve files from")
    g.add_argument("--cors-allow-origins", type=str, default=None, help="comma-separated origins allowed by CORS")
    g.add_argument("--cors-allow-origins-regex", type=str, default=None, help="regex of origins allowed by CORS")
    g.add_argument("--tls-keyfile", type=str, default=None, help="TLS private key file, to serve HTTPS")
    g.add_argument("--tls-certfile", type=str, default=None, help="TLS certificate file, to serve HTTPS")
    g.add_argument("--disable-tls-verify", action="store_true", help="accept self-signed certificates")
    g.add_argument("--subpath", type=str, default=None, help="root path when served behind a reverse proxy")
    g.add_argument("--autolaunch", action="store_true", help="open the UI in the system's browser at start")
    g.add_argument("--theme", type=str, default=None, choices=["light", "dark"], help="force the UI theme")
    g.add_argument("--share", action="store_true", help="accepted for compatibility; public tunnels are not offered")
    g.add_argument("--no-gradio-queue", action="store_true", help="accepted for compatibility")


def _add_path_flags(parser: FlagParser) -> None:
    g = parser.add_argument_group("paths")
    g.add_argument("--data-dir", type=str, default=None, help="base folder for user data (default: the install folder)")
    g.add_argument("--models-dir", type=str, default=None, help="models folder (default: <data-dir>/models)")
    g.add_argument("--ckpt", type=str, default=None, help="checkpoint file to load at start")
    g.add_argument("--ckpt-dir", type=str, default=None, help="extra folder with checkpoints")
    g.add_argument("--vae-dir", type=str, default=None, help="extra folder with VAE files")
    g.add_argument("--vae-path", type=str, default=None, help="VAE file to use always (disables the VAE setting)")
    g.add_argument("--embeddings-dir", type=str, default=None, help="textual inversion folder")
    g.add_argument("--lora-dir", type=str, default=None, help="LoRA folder (default: <models-dir>/Lora)")
    g.add_argument("--hypernetwork-dir", type=str, default=None, help="accepted for compatibility")
    g.add_argument("--ui-settings-file", type=str, default=None, help="settings file (default: <data-dir>/config.json)")
    g.add_argument("--ui-config-file", type=str, default=None, help="UI defaults file (default: ui-config.json)")
    g.add_argument("--styles-file", action="append", default=[], help="styles CSV file(s) (default: styles.csv)")
    g.add_argument("--config", type=str, default=None, help="model config file overriding detection")


def _add_performance_flags(parser: FlagParser) -> None:
    g = parser.add_argument_group("performance and precision")
    g.add_argument("--no-half", action="store_true", help="run models in fp32")
    g.add_argument("--no-half-vae", action="store_true", help="run the VAE in fp32")
    g.add_argument("--precision", type=str, default="autocast", choices=["full", "half", "autocast"],
                   help="full = fp32 everywhere; half = half precision everywhere; autocast = the device's best")
    g.add_argument("--upcast-sampling", action="store_true", help="half-precision weights with fp32 sampling inputs")
    g.add_argument("--medvram", action="store_true", help="keep only the model part in use on the GPU")
    g.add_argument("--medvram-sdxl", action="store_true", help="--medvram for SDXL models only")
    g.add_argument("--lowvram", action="store_true", help="move the UNet to the GPU block by block")
    g.add_argument("--lowram", action="store_true", help="load weights straight to the GPU")
    g.add_argument("--opt-sdp-attention", action="store_true", help="use PyTorch scaled-dot-product attention")
    g.add_argument("--opt-sdp-no-mem-attention", action="store_true", help="SDP attention, deterministic")
    g.add_argument("--opt-split-attention", action="store_true", help="sliced attention to save memory")
    g.add_argument("--opt-sub-quad-attention", action="store_true", help="sliced attention to save memory")
    g.add_argument("--disable-opt-split-attention", action="store_true", help="never slice attention")
    g.add_argument("--opt-channelslast", action="store_true", help="channels-last memory format for the UNet")
    g.add_argument("--xformers", action="store_true", help="accepted for compatibility; SDP attention is used")
    g.add_argument("--use-cpu", nargs="+", default=[], metavar="MODULE",
                   help="run these modules on the CPU: all, sd, interrogate, gfpgan, esrgan, codeformer")
    g.add_argument("--use-ipex", action="store_true", help="use an Intel XPU when present")
    g.add_argument("--device-id", type=str, default=None, help="CUDA device index to use")
    g.add_argument("--disable-nan-check", action="store_true", help="do not check UNet and VAE outputs for NaN")
    g.add_argument("--compile", action="store_true", help="torch.compile the UNet (slow first run, cached after)")


def _add_model_flags(parser: FlagParser) -> None:
    g = parser.add_argument_group("models and safety")
    g.add_argument("--disable-safe-unpickle", action="store_true",
                   help="load .ckpt/.pt files without the restricted unpickler (runs arbitrary code: trust the file)")
    g.add_argument("--no-hashing", action="store_true", help="do not compute checkpoint sha256 hashes")
    g.add_argument("--no-download-sd-model", action="store_true",
                   help="accepted for compatibility; Atelier never downloads models by itself")
    g.add_argument("--do-not-download-clip", action="store_true", help="accepted for compatibility")
    g.add_argument("--skip-load-model-at-start", action="store_true", help="load the model at the first generation")
    g.add_argument("--ui-debug-mode", action="store_true", help="start the UI without loading a model")


def _add_extension_flags(parser: FlagParser) -> None:
    g = parser.add_argument_group("extensions")
    g.add_argument("--disable-all-extensions", action="store_true", help="load no extensions, not even built-in ones")
    g.add_argument("--disable-extra-extensions", action="store_true", help="load only the built-in extensions")
    g.add_argument("--enable-insecure-extension-access", action="store_true",
                   help="allow installing extensions from the UI even when the server listens on the network")
    g.add_argument("--allow-code", action="store_true", help="enable the Custom code script")


def _add_settings_flags(parser: FlagParser) -> None:
    g = parser.add_argument_group("settings and misc")
    g.add_argument("--freeze-settings", action="store_true", help="make every setting read-only")
    g.add_argument("--freeze-settings-in-sections", type=str, default=None, help="comma-separated read-only sections")
    g.add_argument("--freeze-specific-settings", type=str, default=None, help="comma-separated read-only settings")
    g.add_argument("--hide-ui-dir-config", action="store_true", help="hide folder settings in the UI")
    g.add_argument("--no-prompt-history", action="store_true", help="do not write params.txt")
    g.add_argument("--use-textbox-seed", action="store_true", help="seed field as a text box")
    g.add_argument("--disable-console-progressbars", action="store_true", help="no progress bars on the console")


def _add_legacy_flags(parser: FlagParser) -> None:
    g = parser.add_argument_group("legacy (accepted, no effect)")
    for flag in LEGACY_NOOP_FLAGS:
        g.add_argument(flag, action="store_true", help=argparse.SUPPRESS)
    for flag in LEGACY_NOOP_FLAGS_WITH_VALUE:
        g.add_argument(flag, type=str, default=None, help=argparse.SUPPRESS)


def build_parser() -> FlagParser:
    """Build the full flag parser; extensions' preload hooks may still add to it before parsing."""
    parser = FlagParser(
        prog="launch.py",
        description="Atelier: a Stable Diffusion web UI with A1111-compatible flags, API and extensions.",
        epilog="Flags may also be given in the COMMANDLINE_ARGS environment variable.",
    )
    _add_launcher_flags(parser)
    _add_server_flags(parser)
    _add_path_flags(parser)
    _add_performance_flags(parser)
    _add_model_flags(parser)
    _add_extension_flags(parser)
    _add_settings_flags(parser)
    _add_legacy_flags(parser)
    return parser


def argv_with_env(argv: Sequence[str], environ: dict[str, str] | None = None) -> list[str]:
    """Append the COMMANDLINE_ARGS environment variable to argv, as A1111's launcher does."""
    environ = os.environ if environ is None else environ
    return [*argv, *shlex.split(environ.get("COMMANDLINE_ARGS", ""))]


def parse_args(
    argv: Sequence[str] | None = None,
    *,
    environ: dict[str, str] | None = None,
    preload_hooks: Sequence[Callable[[argparse.ArgumentParser], None]] = (),
) -> argparse.Namespace:
    """Parse flags (argv + COMMANDLINE_ARGS); unknown flags exit 2 with suggestions, legacy ones log a notice."""
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    for hook in preload_hooks:
        hook(parser)
    args = parser.parse_args(argv_with_env(argv, environ))
    _warn_about_legacy_flags(args)
    derive(args)
    return args


def _warn_about_legacy_flags(args: argparse.Namespace) -> None:
    for flag in (*LEGACY_NOOP_FLAGS, *LEGACY_NOOP_FLAGS_WITH_VALUE):
        value = getattr(args, flag.lstrip("-").replace("-", "_"))
        if value not in (None, False):
            log.warning("%s is a legacy A1111 flag and has no effect in Atelier.", flag)


def derive(args: argparse.Namespace) -> None:
    """Fill the values A1111 derives from other flags (extension access, bind address)."""
    exposed = bool(args.share or args.listen or args.server_name)
    args.webui_is_non_local = exposed
    args.disable_extension_access = exposed and not args.enable_insecure_extension_access
    if args.reinstall_torch:
        args.reinstall = True
