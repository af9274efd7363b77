"""reward=reward_model: a sequence-classification checkpoint's logit, batched, through the chat template."""

from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf

from prefrun.errors import PrefrunError
from prefrun.rewards import RewardContext, build_reward


def rm(path, **settings):
    cfg = OmegaConf.create({"name": "reward_model", "path": str(path), **settings})
    return build_reward(cfg, RewardContext())


def last_token_logit(model, ids: list[int]) -> float:
    """The reward by hand: the backbone's hidden state at the last token through the score head."""
    with torch.no_grad():
        hidden = model.model(input_ids=torch.tensor([ids])).last_hidden_state[0, -1]
        return float(hidden @ model.score.weight[0])


def test_scores_equal_the_logit_computed_by_hand(micro_reward_model_dir, sort_lists):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    prompts, lists = sort_lists
    scores = rm(micro_reward_model_dir).score(prompts[:4], lists[:4])
    model = AutoModelForSequenceClassification.from_pretrained(micro_reward_model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(micro_reward_model_dir)
    for b in range(4):
        for k, response in enumerate(lists[b]):
            # the tiny tokenizer's template: "user: <prompt>\nassistant: <response>\n"
            text = f"user: {prompts[b]}\nassistant: {response}\n"
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            assert scores[b, k].item() == pytest.approx(last_token_logit(model, ids), abs=1e-5)
    assert scores.std() > 0.01  # the scores are not all alike, so the comparison can fail


def test_plain_template_scores_prompt_response_eos(micro_reward_model_dir, sort_lists):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    prompts, lists = sort_lists
    scores = rm(micro_reward_model_dir, template="plain").score(prompts[:2], lists[:2])
    model = AutoModelForSequenceClassification.from_pretrained(micro_reward_model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(micro_reward_model_dir)
    ids = tokenizer(prompts[1] + lists[1][2] + "</s>")["input_ids"]
    assert scores[1, 2].item() == pytest.approx(last_token_logit(model, ids), abs=1e-5)


@pytest.mark.parametrize("backbone", ["micro_reward_model_dir", "micro_gpt2_reward_model_dir"])
def test_batching_does_not_change_scores(backbone, sort_lists, request):
    path = request.getfixturevalue(backbone)  # GPT-2's absolute positions would shift under left padding
    prompts, lists = sort_lists  # lengths differ within every batch; the saved tokenizers pad on the left
    one = rm(path, batch_size=1).score(prompts, lists)
    many = rm(path, batch_size=7).score(prompts, lists)
    assert torch.allclose(one, many, atol=1e-5)
    assert one.std() > 0.01


def test_a_run_directory_scores_with_its_saved_model(micro_reward_model_dir, sort_lists, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(micro_reward_model_dir, run / "model")
    (run / "config.yaml").write_text("seed: 0\n")
    prompts, lists = sort_lists
    assert torch.equal(rm(run).score(prompts[:2], lists[:2]), rm(micro_reward_model_dir).score(prompts[:2], lists[:2]))


def test_chat_prompts_use_their_own_messages(micro_reward_model_dir):
    source = rm(micro_reward_model_dir)
    chat = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "sort: 2 1 ->"}]
    ids = source.render(chat, " 1 2")
    _, tokenizer = source._load()
    assert tokenizer.decode(ids) == "system: be brief\nuser: sort: 2 1 ->\nassistant:  1 2\n"


def test_prefer_is_bradley_terry_on_the_scores(micro_reward_model_dir, sort_lists, check_preferences):
    prompts, lists = sort_lists
    source = rm(micro_reward_model_dir)
    s = source.score(prompts, lists)
    p = source.prefer(prompts, lists)
    check_preferences(p, len(prompts), 4)
    b, i, j = 3, 0, 2
    assert p[b, i, j].item() == pytest.approx(1 / (1 + math.exp(-(s[b, i] - s[b, j]).item())), abs=1e-6)
    assert source.stats()["score_calls"] == 1 and source.stats()["prefer_calls"] == 1


def test_a_causal_lm_is_refused_in_one_line(micro_model_dir):
    with pytest.raises(PrefrunError) as e:
        rm(micro_model_dir)
    message = str(e.value)
    assert "\n" not in message and "not a sequence-classification model" in message
    assert "LlamaForCausalLM" in message and "reward.path" in message and "task=reward_model" in message


def test_a_causal_lm_preset_is_refused_naming_the_preset(tmp_path):
    cfg = OmegaConf.create({"name": "reward_model", "model": "tiny"})
    with pytest.raises(PrefrunError, match=r"^reward.model='tiny' is not a sequence-classification model"):
        build_reward(cfg, RewardContext(cache_dir=str(tmp_path), words=["1"]))


def test_more_than_one_label_is_refused(micro_model_dir, tmp_path):
    from transformers import AutoConfig, LlamaForSequenceClassification

    config = AutoConfig.from_pretrained(micro_model_dir)
    config.num_labels = 3
    LlamaForSequenceClassification(config).save_pretrained(tmp_path)
    with pytest.raises(PrefrunError, match="num_labels=3"):
        rm(tmp_path)


def test_a_missing_path_or_model_is_a_one_line_error(tmp_path):
    with pytest.raises(PrefrunError, match="does not exist"):
        rm(tmp_path / "nothing")
    with pytest.raises(PrefrunError, match="reward.model=<preset>"):
        build_reward(OmegaConf.create({"name": "reward_model"}), RewardContext())
