"""Test support: not used by the product. A fake LLM server for the tests and benchmarks."""
