"""The active predictor the bot picks images with (shared with the web home)."""

from dreamrate.aesthetic.active import ActivePredictor

__all__ = ["ActivePredictor"]
