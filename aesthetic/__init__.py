"""aesthetic package."""
