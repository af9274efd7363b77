"""Tokenizing records: per-response prompts as separate records, truncation of the full ids, long-text clipping."""

from __future__ import annotations

from transformers import AutoTokenizer

from prefrun.data.tokenize import tokenize_record


def test_per_response_prompts_tokenize_like_separate_records(micro_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(micro_model_dir)
    x, z = "sort: 3 1 2 ->", "sort: 9 8 ->"
    joint = tokenize_record({"prompts": [x, z, x], "responses": [" 1 2 3", " 8 9", " 3 2 1"]}, tokenizer, 64, 64)
    for k, (prompt, response) in enumerate([(x, " 1 2 3"), (z, " 8 9"), (x, " 3 2 1")]):
        alone = tokenize_record({"prompt": prompt, "responses": [response]}, tokenizer, 64, 64)
        assert joint["response_prompt_ids"][k] == alone["prompt_ids"]
        assert joint["response_ids"][k] == alone["response_ids"][0]
    assert joint["prompt_ids"] == joint["response_prompt_ids"][0]


def test_truncation_keeps_the_prompts_end_and_the_responses_start_of_the_full_ids(micro_model_dir):
    from prefrun.data.tokenize import tokenize_full, truncate

    tokenizer = AutoTokenizer.from_pretrained(micro_model_dir)
    record = {"prompt": "sort: 3 1 2 4 5 ->", "responses": [" 1 2 3 4 5", " 5 4"]}
    full = tokenize_full(record, tokenizer)
    assert full["response_ids"][0][-1] == tokenizer.eos_token_id  # EOS is part of each full response
    cut = tokenize_record(record, tokenizer, 3, 2)
    assert cut == truncate(full, 3, 2)
    assert cut["prompt_ids"] == full["prompt_ids"][-3:]
    assert cut["response_ids"] == [ids[:2] for ids in full["response_ids"]]


def test_a_text_past_the_long_text_limit_is_clipped_first_and_keeps_the_same_tokens(micro_model_dir, monkeypatch):
    """A 10 MB response held 2.9 GB while tokenized: such texts are clipped (a prompt to its end, a response to
    its start) before tokenizing, and every token the max lengths keep is the one the whole text gives."""
    from prefrun.data import tokenize as tokenize_module

    tiny_tokenizer = AutoTokenizer.from_pretrained(micro_model_dir)
    words = [str(i % 30) for i in range(3000)]
    record = {"prompt": " ".join(words) + " ?", "responses": [" " + " ".join(reversed(words)), " 1 2"]}
    whole = tokenize_record(record, tiny_tokenizer, 64, 64)
    monkeypatch.setattr(tokenize_module, "LONG_TEXT_CHARS", 2000)  # about a fifth of each long text
    clipped = tokenize_record(record, tiny_tokenizer, 64, 64)
    assert clipped == whole
    full = tokenize_module.tokenize_full(record, tiny_tokenizer)
    assert len(full["prompt_ids"]) < 1000 and len(full["response_ids"][0]) < 1000  # 3,000+ unclipped
