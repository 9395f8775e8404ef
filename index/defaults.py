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
# Rows an IVF search of a shard scans at least: nprobe is raised while the lists
# are short. nlist = 4·sqrt(n) makes lists short in small shards: at 20,000
# vectors (IVF512, ~39 rows a list over the shard) nprobe 16 scans ~625 rows, and
# on photo embeddings (bench.peers' photos, 500 queries) recall@10 was 0.942 at
# nprobe 16 (p95 0.25 ms), 0.959 at 32 (0.37 ms), 0.968 at 48; at 40,000
# (IVF1024) 0.963 at 16 and 0.974 at 32. An exact scan of 20,000 took ~0.67 ms.
# From ~80,000 vectors nprobe 16 scans more than this anyway.
DEFAULT_MIN_SCANNED_ROWS = 1_250

__all__ = [
    "DEFAULT_ANN_THRESHOLD",
    "DEFAULT_FACTORY",
    "DEFAULT_MIN_SCANNED_ROWS",
    "EXACT_FACTORY",
]

# A filtered search reads its matching rows back and scores them exactly when
# that costs less than the index walk through a bitmap of them (a cost model in
# microseconds). Measured with `python -m bench.filtered --crossover` on this
# 2-core machine, 256-d, one query, on one partition of a 100k shard (12.5k
# rows, IVF1024: 12 rows a list) and of a 1M shard (125k rows, IVF4096: 30 a
# list): the walk took 32 / 82 / 186 us at nprobe 16 / 256 / 1024 on the first
# and 93 / 211 / 450 us on the second (quantizer included): per list visited
# 0.15 and 0.35 us, i.e. 0.016 us plus 0.011 us a row tested. Reading 64 / 256 /
# 1024 other rows back per query and scoring them took 20 / 43 / 146 us on the
# first (~0.14 us a row) and 24 / 68 / 244 us on the second (~0.23 us a row:
# 128 MB of vectors, far beyond the cache).
FILTER_READ_US = 0.14
FILTER_READ_UNCACHED_US = 0.23
# The same rows from their 8-bit codes (index/row_codes.py), a gather of 256 bytes
# a row and one matrix product: 0.12 us a row at 125k rows (1,024 / 4,096 rows in
# 125 / 521 us), 0.085 us at 12.5k; the shortlist is rescored on top. faiss's
# scanner, which scores them now (CodeScale.best), took 88 us where this took 130
# for ~1,000 rows of a 1M shard: the constant errs towards the walk.
FILTER_READ_CODES_US = 0.13
# Rows read back exactly: this many times k (times an image's most rows) of those
# scored by their codes, the best by the codes, per query: over all of a shard's
# partitions at once (index/selective_filters.py), or a partition used alone over
# its own. The best 14 of a shard held every exact top 10 of 3,000 filtered
# queries at 1M (mixture) and 99.97 % at 100k (photos), 16 all of both.
RESCORE_PER_K = 2
FILTER_LIST_US = 0.016
FILTER_ROW_TEST_US = 0.011
# Vectors beyond this many bytes in a partition are read back at the uncached cost.
FILTER_CACHED_BYTES = 32 << 20
# The index walk's budget (nprobe, efSearch) grows by (1 / selectivity) to this
# power, at most FILTER_MAX_BOOST times: the filtered top k lie about as far out
# as the unfiltered top k / selectivity. Measured with bench.filtered's filters
# (Zipf tags and owners independent of the vectors: the hard case), exponent
# 1.0 / 0.75 / 0.5: on the 1M mixture (IVF4096, nprobe 16) recall@10 1.000 at
# every selectivity, p95 at 1 % 8.0 / 5.2 / 3.0 ms; on 100k photo embeddings
# (IVF1024) recall@10 at 10 % 0.981 / 0.973 / 0.965; on a 30k mixture (IVF512,
# 7 rows a list), recall@10 at 10 % 0.955-0.968 with 1.0 but 0.920-0.938 with
# 0.75 (40 queries). Recall first: 1.0.
FILTER_BOOST_EXPONENT = 1.0
FILTER_MAX_BOOST = 64
# Rows read back for a filter are sorted this many times k at first (a partial
# sort): k distinct images are almost always among them; the rest are sorted
# only when an image's tiles crowd them out.
READ_BACK_FIRST_SORT = 4
