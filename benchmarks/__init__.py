"""Benchmarks (make bench). Each prints a table of rates measured side by side in one run."""
