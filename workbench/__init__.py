"""LLM user workbench: compare LLM-simulated users with real people in task-oriented conversations."""

from db import __version__

__all__ = ["__version__"]
