"""LLM user workbench: compare LLM-simulated users with real people in task-oriented conversations."""

__version__ = "0.1.0"
