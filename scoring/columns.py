"""The result columns a scored row gets, in order, and how a prediction becomes one row of them.

The fields are /predict's (app/schemas.py `Prediction`), flattened so every format holds them as plain
columns: `probabilities` becomes one `p_<label>` column per label of the artifact (meta.json `labels`),
`warnings` one string (the warnings joined by ";", empty for none). `score` and `polarity` are empty
(null) when the label is `unknown` or the labels have no polarity. Torch-free: the main process of the
local engine uses it without loading a model."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch-free at run time (see above)
    from core.engine import Prediction

# (name, kind) before and after the probability columns; kinds: str, float, bool, int
HEAD: tuple[tuple[str, str], ...] = (("label", "str"), ("score", "float"), ("polarity", "float"))
TAIL: tuple[tuple[str, str], ...] = (("truncated", "bool"), ("chunks", "int"), ("warnings", "str"))
WARNING_SEPARATOR = ";"

# One scored row: the values of result_columns() in order.
ResultRow = tuple[Any, ...]


def probability_column(label: str) -> str:
    return f"p_{label}"


def result_fields(labels: Sequence[str]) -> list[tuple[str, str]]:
    return [*HEAD, *((probability_column(label), "float") for label in labels), *TAIL]


def result_columns(labels: Sequence[str], prefix: str = "") -> list[str]:
    return [prefix + name for name, _ in result_fields(labels)]


def row_of(prediction: Prediction) -> ResultRow:
    """A /predict prediction (core/engine.py `predictions`) as one result row: its probabilities are
    in the order of the artifact's labels, as the columns are."""
    return (
        prediction.label,
        prediction.score,
        prediction.polarity,
        *prediction.probabilities,
        prediction.truncated,
        prediction.chunks,
        WARNING_SEPARATOR.join(prediction.warnings),
    )


def prediction_of(values: dict[str, Any], labels: Sequence[str], prefix: str = "") -> dict[str, Any]:
    """The inverse of row_of for a row read back from a file (tests, comparisons): /predict's fields."""
    warnings = values[prefix + "warnings"] or ""
    return {
        "label": values[prefix + "label"],
        "score": values[prefix + "score"],
        "polarity": values[prefix + "polarity"],
        "probabilities": {label: values[prefix + probability_column(label)] for label in labels},
        "truncated": values[prefix + "truncated"],
        "chunks": values[prefix + "chunks"],
        "warnings": warnings.split(WARNING_SEPARATOR) if warnings else [],
    }
