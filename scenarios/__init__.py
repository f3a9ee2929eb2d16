"""Scenario schema, loader and the bundled scenario packs."""
