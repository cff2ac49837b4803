"""Start-up: flags (with extensions' preload.py) → logging → folders → settings → device → extension installers →
scripts → HTTP server.

The browser UI (Gradio) is mounted on a FastAPI app; `--api` adds the `/sdapi/v1` routes beside it and `--nowebui`
serves the API alone on port 7861, as in A1111. The process prints one readiness line with the URL once the server
accepts connections. "Apply and restart UI" rebuilds the app in-process (`modules.server_reload`).
"""

from __future__ import annotations

import argparse
import logging
import socket
import sys
import uuid

from modules import devices, extensions, script_callbacks, scripts, sd_models, shared
from modules.credentials import parse_credentials
from modules.jobs import JobQueue
from modules.logging_config import setup_logging
from modules.options import Options
from modules.paths import Paths, paths_from_args
from modules.shared_options import options_templates
from modules.shared_state import State
from modules.styles import StyleDatabase

log = logging.getLogger(__name__)

DEFAULT_UI_PORT = 7860
DEFAULT_API_PORT = 7861


def ui_credentials(args: argparse.Namespace) -> list[tuple[str, str]]:
    pairs = parse_credentials(args.gradio_auth) if args.gradio_auth else []
    if args.gradio_auth_path:
        with open(args.gradio_auth_path, encoding="utf8") as f:
            pairs += parse_credentials(f.read())
    return pairs


def load_settings(args: argparse.Namespace, paths: Paths) -> Options:
    frozen_sections = (args.freeze_settings_in_sections or "").split(",")
    frozen_keys = (args.freeze_specific_settings or "").split(",")
    opts = Options(options_templates, frozen=args.freeze_settings,
                   frozen_sections=[s for s in frozen_sections if s], frozen_keys=[k for k in frozen_keys if k])
    opts.load(paths.settings_file)
    return opts


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def choose_port(host: str, requested: int | None, default: int) -> int:
    """The requested port, or the first free one from the default upwards (as Gradio does for 7860)."""
    if requested is not None:
        return requested
    for port in range(default, default + 100):
        if port_is_free(host, port):
            return port
    raise OSError(f"no free port between {default} and {default + 99}")


def bind_host(args: argparse.Namespace) -> str:
    if args.server_name:
        return args.server_name
    return "0.0.0.0" if args.listen else "127.0.0.1"


def initialize(argv: list[str]) -> argparse.Namespace:
    """Everything before the server: flags, logging, folders, settings, device. Fills `modules.shared`."""
    from modules import extensions_install

    args = extensions.parse_args_with_preload(argv)
    setup_logging(args.loglevel)
    paths = paths_from_args(args)
    paths.ensure()
    opts = load_settings(args, paths)
    choice = devices.choose(devices.detect_capabilities(), args)
    if choice.notice:
        log.info(choice.notice)
    shared.cmd_opts, shared.opts, shared.paths, shared.device_choice = args, opts, paths, choice
    shared.device = choice.device
    shared.state = State()
    shared.job_queue = JobQueue(shared.state)
    shared.model_cache = sd_models.ModelCache(args, choice, paths)
    shared.prompt_styles = StyleDatabase(paths.styles_file)
    extensions_install.run_installers(paths, opts, args)
    load_extension_scripts(args)
    return args


def load_extension_scripts(args: argparse.Namespace) -> None:
    """List the extensions again (settings may have changed) and load the built-in and active extensions' scripts."""
    scripts.load_scripts(extensions.refresh(shared.paths, shared.opts, args))  # failures are logged by file


def reload_scripts(args: argparse.Namespace) -> None:
    """Before a UI reload: tell extensions, undo their callbacks, then list extensions and load scripts again."""
    script_callbacks.app_reload_callback()
    script_callbacks.script_unloaded_callback()
    script_callbacks.clear_callbacks()
    load_extension_scripts(args)


def api_context(args: argparse.Namespace):
    """What the /sdapi/v1 routes and the UI need, built from the start-up state."""
    from modules.api.api import ApiContext
    from modules.model_selection import model_getter

    context = ApiContext(opts=shared.opts, paths=shared.paths, args=args, queue=shared.job_queue,
                         get_model=lambda: None, model_cache=shared.model_cache,
                         scripts_info=lambda: scripts.script_info(),
                         extensions_info=lambda: extensions.extensions_info(),
                         prepare_scripts=scripts.prepare_api_request)
    context.get_model = model_getter(shared.opts, shared.model_cache, lambda: context.checkpoints)
    context.refresh_checkpoints()
    return context


def build_app(args: argparse.Namespace):
    """The FastAPI app: the /sdapi/v1 API with --api or --nowebui, and the UI mounted unless --nowebui.

    Both faces share one context (settings, folders, job queue, model); it is kept as ``app.state.atelier_context``.
    Extensions' ``on_before_ui`` callbacks run first, their ``on_app_started`` callbacks last (routes they add are
    served in front of the UI).
    """
    from fastapi import FastAPI

    from modules import app_factory
    from modules.internal_routes import add_internal_routes

    build_id = uuid.uuid4().hex
    app = FastAPI(title="Atelier API", docs_url="/docs", redoc_url="/redoc", root_path=args.subpath or "")
    app_factory.add_middleware(app, args)
    context = api_context(args)
    app.state.atelier_context = context
    app.state.atelier_build = build_id
    add_internal_routes(app, context.queue, build_id)
    if args.api or args.nowebui:
        from modules.api.api import Api

        Api(app, context)
    script_callbacks.before_ui_callback()
    demo = None
    if not args.nowebui:
        app = app_factory.mount_ui(app, args, ui_credentials(args), context, extensions.active(), build_id)
        demo = shared.demo = app.state.atelier_blocks
    script_callbacks.app_started_callback(demo, app)
    app_factory.root_mounts_last(app)
    return app


def serve(app, args: argparse.Namespace) -> None:
    """Run uvicorn until interrupted, rebuilding the app on "Apply and restart UI"; print one readiness line once it
    accepts connections."""
    from modules.server_reload import ServerLoop

    host = bind_host(args)
    port = choose_port(host, args.port, DEFAULT_API_PORT if args.nowebui else DEFAULT_UI_PORT)

    def rebuild():
        reload_scripts(args)
        return build_app(args)

    loop = ServerLoop(app, host, port, rebuild, timeout_keep_alive=args.timeout_keep_alive,
                      ssl_keyfile=args.tls_keyfile, ssl_certfile=args.tls_certfile)
    if not loop.start():
        loop.stop(1)
        sys.exit(f"The server could not start on {host}:{port} (see the messages above).")
    scheme = "https" if args.tls_certfile else "http"
    shown_host = "127.0.0.1" if host == "0.0.0.0" else host
    what = "API" if args.nowebui else "UI"
    print(f"Atelier {what} ready: {scheme}://{shown_host}:{port}{args.subpath or ''}/", flush=True)
    if args.autolaunch and not args.nowebui:
        import webbrowser

        webbrowser.open(f"{scheme}://{shown_host}:{port}/")
    try:
        loop.serve_until_stopped(shared.state)
    except KeyboardInterrupt:
        print("Stopping...", flush=True)
        loop.stop(10)


def main(argv: list[str]) -> None:
    args = initialize(argv)
    try:
        app = build_app(args)
    except (ValueError, OSError) as e:  # malformed --api-auth/--gradio-auth, unreadable --gradio-auth-path
        print(f"Cannot start: {e}", file=sys.stderr)
        sys.exit(2)
    serve(app, args)
