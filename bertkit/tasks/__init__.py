"""Task data layers for token-level and relation tasks: plain functions over a tokenizer.

* :mod:`bertkit.tasks.ner` — CoNLL / JSONL readers and writers, BIO/BIOES, word→sub-token alignment with
  sliding windows (:func:`~bertkit.tasks.ner.align_labels`) and merging back to words.
* :mod:`bertkit.tasks.spans` — candidate spans and targets for the span classification head.
* :mod:`bertkit.tasks.qa` — SQuAD readers, ``doc_stride`` features, n-best post-processing, null threshold.
* :mod:`bertkit.tasks.relation` — marked-entity relation rows (SemEval-2010 Task 8 style).

See docs/token-tasks.md.
"""
