"""Features, statistics, charts and reports."""
