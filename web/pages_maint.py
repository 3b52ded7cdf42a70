"""The maintainers' page: the queue, workers with their heartbeats and throughput, recent
failures, predictors with their metrics, and the last month's activity as plots."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Sequence

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from dreamrate.web.context import ctx
from dreamrate.web.queries import maintainer_overview

__all__ = ["maintainers_page", "plot"]

PLOTS = {
    "ratings": ("Rating events per day", "ratings_per_day"),
    "raters": ("Members rating per day", "raters_per_day"),
    "wait": ("Mean queue wait per day (s)", "wait_per_day"),
}


async def maintainers_page(request: Request) -> Response:
    context = ctx(request)
    context.maintainer(request)
    overview = await maintainer_overview(context.engine)
    return context.render(request, "maintainers.html", {"o": overview, "plots": PLOTS})


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
