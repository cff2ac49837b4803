"""``python extensions/code-translator/translate.py --to JavaScript file.py``: the command line from anywhere."""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parents[1]))  # Atelier's root, for modules.errors

from code_translator.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
