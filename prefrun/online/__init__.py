"""Online preference training: the current policy is the data source (``task=online``).

    each round, every ``online.update_every`` optimizer steps:
        y_1 … y_K ~ π_θ(· | x)              for the round's prompts (the one sampler, one prefill per prompt)
        s_k = r(x, y_k)                       the configured reward source (``reward=oracle`` on sort)
        log π_θ(y_k), log π_ref(y_k)          one forward each, without gradient, in the same pass
        records = shape(samples, online.pairs)  best/worst pair, all pairs or the list; ties dropped
    then train any registered policy objective on the round's records (the list trainer)

OAIF (Guo et al. 2024, arXiv 2402.04792) with K ≥ 2 samples per prompt: online DPO, IPO, LiPO or PRO are
the offline objectives fed fresh lists, and objectives that take ``old_logps`` (the sampling policy's summed
log-probs) get them in every record. Modules: ``shaping`` (samples → records, ties counted), ``rounds`` (a
round's samples: drawn, scored, saved content-hashed for audit and resume), ``trainer`` (the list trainer
drawing its batches from rounds), ``figure`` (per-round curves).
"""
