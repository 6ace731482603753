"""The log engine: record batches, segments, partition logs, recovery and the manager."""
