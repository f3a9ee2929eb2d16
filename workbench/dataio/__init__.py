"""Import and export: the released RecLLMSim data, and a study's conversations as JSONL/CSV/Parquet."""
