"""The maintainers' page: the queue, workers with their heartbeats and throughput, recent
failures, predictors with their metrics, and the last month's activity as plots."""

from __future__ import annotations

import asyncio
import io
import re
from collections.abc import Sequence
from pathlib import Path

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, Response

from dreamrate.web.context import ROW_ID_MAX, ctx
from dreamrate.web.outputs import find_outputs
from dreamrate.web.queries import maintainer_overview

__all__ = ["maintainers_page", "plot", "predictor_file"]

#: What of a predictor's folder the page links to: its report (and the report's PNGs), its card.
PREDICTOR_FILE = re.compile(r"^(report\.html|PREDICTOR\.md|[a-z0-9_-]{1,40}\.png)$")
#: The report is our own HTML with inline styles; it runs no script.
REPORT_CSP = "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'"

PLOTS = {
    "ratings": ("Rating events per day", "ratings_per_day"),
    "raters": ("Members rating per day", "raters_per_day"),
    "wait": ("Mean queue wait per day (s)", "wait_per_day"),
}


async def maintainers_page(request: Request) -> Response:
    context = ctx(request)
    context.maintainer(request)
    overview = await maintainer_overview(context.engine)
    web = context.settings.web
    roots = [Path(p) for p in web.outputs] or [context.settings.data_dir]
    outputs = await asyncio.to_thread(find_outputs, roots)
    return context.render(
        request, "maintainers.html", {"o": overview, "plots": PLOTS, "outputs": outputs}
    )


def _svg(title: str, points: Sequence[tuple[str, float]]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 2.4), dpi=100)
    axes = figure.add_subplot()
    if points:
        days = [d[5:] for d, _ in points]
        axes.bar(days, [v for _, v in points], color="#5865f2")
        axes.tick_params(axis="x", labelrotation=60, labelsize=7)
    else:
        axes.text(0.5, 0.5, "nothing yet", ha="center", va="center", transform=axes.transAxes)
    axes.set_title(title, fontsize=10)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="svg")
    return buffer.getvalue()


async def plot(request: Request) -> Response:
    context = ctx(request)
    context.maintainer(request)
    name = request.path_params["name"]
    if name not in PLOTS:
        raise HTTPException(404, "No such plot.")
    title, field = PLOTS[name]
    overview = await maintainer_overview(context.engine)
    svg = await asyncio.to_thread(_svg, title, getattr(overview, field))
    return Response(
        svg, media_type="image/svg+xml", headers={"Cache-Control": "private, max-age=60"}
    )


async def predictor_file(request: Request) -> Response:
    """A predictor's ``report.html``, its PNGs or its ``PREDICTOR.md`` (maintainers only)."""
    from sqlalchemy import select

    from dreamrate.db.models import Predictor as PredictorRow
    from dreamrate.web.thumbs import inside

    context = ctx(request)
    context.maintainer(request)
    name = request.path_params["name"]
    if not PREDICTOR_FILE.match(name) or request.path_params["predictor_id"] > ROW_ID_MAX:
        raise HTTPException(404, "No such file.")
    async with context.engine.connect() as conn:
        folder = await conn.scalar(
            select(PredictorRow.path).where(PredictorRow.id == request.path_params["predictor_id"])
        )
    path = None if folder is None else inside(Path(folder), name)
    if path is None or not path.is_file():
        raise HTTPException(404, "No such file.")
    media = {"html": "text/html", "md": "text/plain; charset=utf-8", "png": "image/png"}
    return FileResponse(
        path,
        media_type=media[name.rsplit(".", 1)[1]],
        headers={"Content-Security-Policy": REPORT_CSP, "Cache-Control": "private, no-cache"},
    )
