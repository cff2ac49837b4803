"""Command line: translate a file (or stdin) and print the result as it streams; progress goes to stderr.

    python -m code_translator --from Python --to JavaScript program.py --base-url http://127.0.0.1:8080/v1
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from code_translator.detect import detect_language
from code_translator.errors import TranslationError, describe
from code_translator.languages import LANGUAGES
from code_translator.settings import LOCAL, SERVER, TranslatorConfig, make_backend
from code_translator.translator import MAX_REPAIR_ROUNDS, TranslationJob, translate


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m code_translator", description=__doc__.splitlines()[0])
    parser.add_argument("file", nargs="?", help="source file (default: stdin)")
    parser.add_argument("--from", dest="input_language", help="input language (default: detected)")
    parser.add_argument("--to", dest="output_language", required=True, help=f"one of: {', '.join(LANGUAGES)}")
    parser.add_argument("--backend", choices=[SERVER, LOCAL], default=SERVER)
    parser.add_argument("--base-url", default=os.environ.get("OPENAI_BASE_URL", TranslatorConfig.base_url))
    parser.add_argument("--model", default="", help="server model, or a folder name under --models-dir/code-translator")
    parser.add_argument("--models-dir", type=Path, default=Path("models"), help="for --backend local")
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument("--max-tokens", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--chunk-tokens", type=int, default=1500)
    parser.add_argument("--verify-inputs", help="run both programs on this stdin text (cases split by '---' lines)")
    parser.add_argument("--repair-rounds", type=int, default=0, choices=range(MAX_REPAIR_ROUNDS + 1))
    parser.add_argument("--out", type=Path, help="also write the final translation to this file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Exit status 0 on success, 1 when the translation failed, 2 for a bad command line."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        code = Path(args.file).read_text(encoding="utf-8") if args.file else sys.stdin.read()
    except (OSError, UnicodeDecodeError) as exc:
        print(f"Cannot read {args.file}: {exc}", file=sys.stderr)
        return 2
    input_language = args.input_language or detect_language(code, args.file)
    if not input_language:
        print("Cannot tell the input language; give it with --from.", file=sys.stderr)
        return 2
    config = TranslatorConfig(args.base_url, args.model, args.temperature, args.max_tokens, args.timeout,
                              args.chunk_tokens)
    try:
        backend = make_backend(args.backend, config, os.environ.get("OPENAI_API_KEY", ""), args.models_dir)
    except TranslationError as exc:
        print(f"Error: {describe(exc)}", file=sys.stderr)
        return 2
    job = TranslationJob(input_language, args.output_language, code, args.chunk_tokens, args.verify_inputs,
                         args.repair_rounds)
    last = None
    status = ""
    for update in translate(job, backend):
        last = update
        if args.verify_inputs is None:
            sys.stdout.write(update.delta)
            sys.stdout.flush()
        if update.status != status:
            status = update.status
            print(f"Error: {status}" if update.error is not None else f"[{status}]", file=sys.stderr)
    assert last is not None
    if args.verify_inputs is not None:
        sys.stdout.write(last.output)
        if last.report is not None and not last.report.passed:
            print(last.report.diff(), file=sys.stderr)
    if last.output and not last.output.endswith("\n"):
        sys.stdout.write("\n")
    if args.out:
        args.out.write_text(last.output, encoding="utf-8")
    return 1 if last.error is not None else 0
