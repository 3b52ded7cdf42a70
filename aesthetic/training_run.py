"""One training run as ``dreamrate train`` does it: train, then write the predictor folder.

The command and the demo both call :func:`train_and_save`, so the demo's predictor is made
exactly as a maintainer's is: the same training, the same folder with ``report.html`` and
the ``PREDICTOR.md`` card, written atomically.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from dreamrate.aesthetic.card import write_card
from dreamrate.aesthetic.predictor import save_predictor
from dreamrate.aesthetic.report import write_report
from dreamrate.aesthetic.train import TrainingResult, train_predictor
from dreamrate.ratings.training_data import TrainingData

__all__ = ["train_and_save"]


def train_and_save(
    data: TrainingData,
    out: Path,
    *,
    overwrite: bool = False,
    read: Callable[[str], bytes] | None = None,
    **options: Any,
) -> TrainingResult:
    """Train on ``data`` (``options``: :func:`~dreamrate.aesthetic.train.train_predictor`'s)
    and write the predictor with its report and card to ``out``. ``read`` reads the report's
    images from the image store (default: ``data.image_paths`` are files).

    Raises
    ------
    TrainingError
        as :func:`~dreamrate.aesthetic.train.train_predictor`; nothing is written then.
    """
    result = train_predictor(data, **options)
    save_predictor(
        result.predictor,
        out,
        overwrite=overwrite,
        extras=lambda folder: (
            write_report(result, folder, image_paths=data.image_paths, read=read),
            write_card(result, folder),
        ),
    )
    return result
