"""Language-model primitives every stage shares: response log-probs (``logprobs``)."""
