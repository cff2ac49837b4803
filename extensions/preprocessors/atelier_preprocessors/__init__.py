"""Atelier's preprocessors (annotators): pictures → condition maps for T2I-Adapter and ControlNet-style units.

The public names live in :mod:`.api`; see its docstring.
"""

from .api import (
    BadAnnotatorWeights,
    MissingAnnotatorWeights,
    PreprocessorError,
    PreprocessorUnavailable,
    UnknownPreprocessor,
    canonical_name,
    configure,
    list_preprocessors,
    preprocessor_info,
    preprocessor_params,
    run_preprocessor,
)

__all__ = ["BadAnnotatorWeights", "MissingAnnotatorWeights", "PreprocessorError", "PreprocessorUnavailable",
           "UnknownPreprocessor", "canonical_name", "configure", "list_preprocessors", "preprocessor_info",
           "preprocessor_params", "run_preprocessor"]
