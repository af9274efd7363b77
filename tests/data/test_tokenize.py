"""Per-response prompts tokenize as if each (prompt, response) were its own record."""

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
