"""What a generation worker reports to Prometheus: the queue, its batches, its attempts."""

from __future__ import annotations

import sys

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["WorkerMetrics"]

#: Seconds a batch's render takes: a one-step tiny model on a CPU to 50 steps of SDXL.
RENDER_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320)


def _gpu_memory_bytes() -> float:
    """Memory torch holds on the GPU (0 without one, or before anything ran there)."""
    torch = sys.modules.get("torch")  # never import torch just to be scraped
    try:
        cuda = torch.cuda  # type: ignore[union-attr]
        if not cuda.is_available() or not cuda.is_initialized():
            return 0.0
        return float(cuda.memory_allocated())
    except AttributeError:
        # No torch yet, or the render thread is importing it right now (a half-made module:
        # seen when a scrape came while the worker loaded its first model).
        return 0.0


class WorkerMetrics:
    """The worker's metrics, in a registry of its own (``dreamrate_worker_*``)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.queued = Gauge(
            "dreamrate_worker_queue_renders",
            "Renders waiting in the queue (all workers'; best-of-N counts N per image).",
            registry=r,
        )
        self.running = Gauge(
            "dreamrate_worker_running_renders",
            "Renders being drawn now by any worker.",
            registry=r,
        )
        self.batch_images = Histogram(
            "dreamrate_worker_batch_images",
            "Images rendered per batch.",
            buckets=(1, 2, 4, 8, 16, 32, 64),
            registry=r,
        )
        self.render_seconds = Histogram(
            "dreamrate_worker_render_seconds",
            "Seconds a batch took to render (loading and storing apart).",
            buckets=RENDER_BUCKETS,
            registry=r,
        )
        self.images = Counter(
            "dreamrate_worker_images",
            "Images this worker rendered and stored (rate(): images per second).",
            registry=r,
        )
        self.images_per_second = Gauge(
            "dreamrate_worker_images_per_second",
            "Images per second of render time in the last batch.",
            registry=r,
        )
        self.attempts = Counter(
            "dreamrate_worker_attempts",
            "Jobs this worker ended an attempt at, by outcome: done, failed (will be retried "
            "or failed for good), released (given back: shutdown or the store), cancelled.",
            ["outcome"],
            registry=r,
        )
        for outcome in ("done", "failed", "released", "cancelled"):
            self.attempts.labels(outcome)  # every series exists from the start, at 0
        self.gpu_memory = Gauge(
            "dreamrate_worker_gpu_memory_bytes",
            "GPU memory torch holds (0 on a CPU).",
            registry=r,
        )
        self.gpu_memory.set_function(_gpu_memory_bytes)
        self.store_down = Gauge(
            "dreamrate_worker_store_down",
            "1 while the image store refuses writes (no batch is claimed meanwhile).",
            registry=r,
        )

    def batch(self, images: int, render_seconds: float) -> None:
        """A batch was rendered: ``images`` in ``render_seconds``."""
        self.batch_images.observe(images)
        self.render_seconds.observe(render_seconds)
        if images and render_seconds > 0:
            self.images_per_second.set(images / render_seconds)
