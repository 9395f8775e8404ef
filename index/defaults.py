"""The index defaults every caller shares (Partition, settings, benchmarks), in a
module without faiss so that settings can name them cheaply."""

EXACT_FACTORY = "Flat"
# The service's index and every default that names one (Partition, settings,
# benchmarks): IVF-Flat keeps exact vectors (recall only depends on nprobe,
# deletes need no graph repair) and its lists can be shared across partitions.
DEFAULT_FACTORY = "IVF{nlist},Flat"
# Live vectors of a group (a shard's partitions) at which it moves to ANN.
# Measured with `python -m bench.peers --crossover` (one shard of 8 partitions,
# 256-d Gaussian mixture, 2 cores, 2026-12-06), exact vs IVF{nlist} p50:
# 0.23 vs 0.15 ms at 5,000 vectors (IVF recall@10 0.82), 0.34 vs 0.18 ms at
# 10,000 (0.976), 0.67 vs 0.24 ms at 20,000 (1.000), 1.42 vs 0.25 ms at
# 40,000, 4.33 vs 0.36 ms at 100,000. From 20,000 the IVF is ~3x faster at
# full recall; below, an exact scan costs well under a millisecond.
DEFAULT_ANN_THRESHOLD = 20_000

__all__ = ["DEFAULT_ANN_THRESHOLD", "DEFAULT_FACTORY", "EXACT_FACTORY"]

# A filtered search reads its matching rows back and scores them exactly when
# that costs less than the index walk through a bitmap of them. Costs in units
# of one row tested by the walk (~5 ns: a full-scan walk of a 100k-row
# IVF1024,Flat partition took 0.55 ms); measured on one 12.5k-row partition of
# a 100k shard (IVF1024, 256-d, one query): the walk took 28 / 78 / 183 us at
# nprobe 16 / 256 / 1024 (a list visit ~0.15 us = 30 rows), reading 64 / 256 /
# 1024 rows back and scoring them 12 / 23 / 78 us (~0.1 us = 20 rows a row).
FILTER_ROW_READ_COST = 20
FILTER_LIST_VISIT_COST = 30
# The index walk's budget (nprobe, efSearch) grows by the inverse of a
# filter's selectivity, at most this much.
FILTER_MAX_BOOST = 64
