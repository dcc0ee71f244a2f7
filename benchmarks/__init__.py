"""Step-time and throughput comparisons. Each ``bench_<name>.py`` writes a table; none asserts a time."""
