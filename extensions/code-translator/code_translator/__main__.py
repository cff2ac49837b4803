"""``python -m code_translator`` (run from the extension folder): the command line."""

import sys
from pathlib import Path

ATELIER_ROOT = Path(__file__).resolve().parents[3]
if (ATELIER_ROOT / "modules" / "errors.py").is_file() and str(ATELIER_ROOT) not in sys.path:
    sys.path.append(str(ATELIER_ROOT))  # for modules.errors, which the errors here extend

from code_translator.cli import main  # noqa: E402

sys.exit(main())
