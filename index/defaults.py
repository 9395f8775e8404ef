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
# IVF1024,Flat partition took 0.55 ms). Measured on this 2-core machine, 256-d,
# one query: on a 12.5k-row partition (a 100k shard's, IVF1024) the walk took
# 28 / 78 / 183 us at nprobe 16 / 256 / 1024 (a list visit ~0.15 us = 30 rows)
# and reading 64 / 256 / 1024 rows back and scoring them 12 / 23 / 78 us
# (~0.1 us = 20 rows a row); on a 125k-row partition (a 1M shard's, 128 MB of
# vectors, out of cache) a row read back cost ~0.46 us, and with 100 instead
# of 20 a 1 % filter's p95 fell from 3.0 to 2.1 ms at the same recall.
FILTER_ROW_READ_COST = 20
FILTER_ROW_READ_COST_UNCACHED = 100
# Vectors beyond this many bytes in a partition are read back at the uncached cost.
FILTER_CACHED_BYTES = 32 << 20
FILTER_LIST_VISIT_COST = 30
# The index walk's budget (nprobe, efSearch) grows by (1 / selectivity) to this
# power, at most FILTER_MAX_BOOST times: the filtered top k lie about as far out
# as the unfiltered top k / selectivity. Measured with bench.filtered's filters
# at 1M (IVF4096, nprobe 16): exponent 1.0 / 0.75 / 0.5 gave recall@10 1.000 at
# every selectivity and p95 8.0 / 5.2 / 3.0 ms at 1 %, 3.7 / 3.0 / 2.4 ms at 10 %.
FILTER_BOOST_EXPONENT = 0.5
FILTER_MAX_BOOST = 64
