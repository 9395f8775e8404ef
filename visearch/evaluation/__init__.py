"""Offline evaluation: ``visearch eval`` and its data sets.

An evaluation set is three things on disk: a folder of corpus images, a folder
of query images, and TREC qrels (``query 0 doc relevance``); ids are file
stems. One module per job:

* :mod:`.dataset` - reading and writing sets (the layout builders produce);
* :mod:`.crops`, :mod:`.edits`, :mod:`.classes` - builders of sets from folders
  (hard crop queries, DISC-style edited copies, same-class retrieval);
* :mod:`.photos` with :mod:`.photo_sources` and :mod:`.photo_edits` - the real
  photograph sets (sources from Debian packages, tune/held-out split, hard crops
  and eleven edit kinds);
* :mod:`.embedding` - the encoder under test (an exported model, or raw pixels
  as the floor) and batch embedding through the service's preprocessing;
* :mod:`.searching` - an index built the way the service builds one, searched
  through the service's search path (merge, near-duplicate collapse);
* :mod:`.runner` - embed, index, search, score; :mod:`.outputs` writes
  metrics JSON, the per-query TSV and the TREC run;
* :mod:`.curves` - recall@k and precision-recall curves for the report;
* :mod:`.report` and :mod:`.svg` - the self-contained HTML report.
"""
