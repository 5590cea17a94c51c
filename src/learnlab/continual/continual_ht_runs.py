"""The runs of the ``continual-ht`` study: meta-training every model, then the scenario evaluations.

Models (item keys of the meta-training stage):

- ``ht-w<C>``: HT with a generated logits head and all conv layers generated, width ``C`` (HT paper);
- ``htp-w<C>``: the same HT with a generated embedding head read by prototypes (CHT paper's head);
- ``pn-w<C>``: ProtoNet, the same CNN with trained weights and an embedding head (``pn-w<cht_width>``
  is also the ConstPN baseline and the body that naive fine-tuning starts from);
- ``cht``: Continual HT (embedding head), trained on sequences of ``train_tasks`` tasks;
- ``merged-ht``: HT with an embedding head that sees the union of the supports of 1 ... ``eval_tasks``
  tasks at once (MergedHT, the upper bound of class-incremental learning).

Each model is saved as ``stages/models/<key>.safetensors``; meta-training checkpoints to
``<key>.train.pt`` next to it, so a killed run resumes mid-training. ``config`` is the study's config.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch import nn

from learnlab.continual.episodes import merged, sample_episodes, sample_sequences
from learnlab.continual.hypertransformer import HTSettings, HyperTransformer, TrainedCNN, generate_chain
from learnlab.continual.learning import (finetune_outcome, logits_episode, merged_outcome, minibatch_accuracy,
                                         prototype_episode, sequence_outcome)
from learnlab.continual.meta_training import meta_train
from learnlab.continual.target_cnn import CNNSpec
from learnlab.core.io import load_tensors, save_tensors
from learnlab.core.runtime import derive_seed
from learnlab.data.glyphs import FewShotSplits, generate_glyphs, split_classes
from learnlab.data.image_classes import load_image_classes, load_omniglot

SWEEP_MODELS = ("ht", "htp", "pn")
EVALUATIONS = ("cht", "cht-cached", "constpn", "merged-ht", "finetune", "minibatches")


def sweep_models(config: Any) -> tuple[str, ...]:
    """The width sweep's models: HT, ProtoNet and, with ``prototype_sweep``, HT with a prototype head."""
    return SWEEP_MODELS if config.prototype_sweep else ("ht", "pn")


def evaluations(config: Any) -> list[str]:
    """The continual scenarios' methods (MergedHT only with ``merged_ht``)."""
    return [name for name in EVALUATIONS if name != "merged-ht" or config.merged_ht]


@lru_cache(maxsize=2)
def few_shot_splits(dataset: str, root: str, image_size: int, glyph_classes: int, samples: int, train_classes: int,
                    test_start: int, seed: int) -> FewShotSplits:
    """The meta-training and meta-test classes of the configured dataset (cached per process)."""
    if dataset == "glyphs":
        classes = generate_glyphs(glyph_classes, samples, image_size, seed)
    elif dataset == "omniglot":
        classes = load_omniglot(root, image_size)
    else:
        classes = load_image_classes(root, image_size)
    return split_classes(classes, train_classes, test_start)


def splits_of(config: Any) -> FewShotSplits:
    return few_shot_splits(config.dataset, config.data_root, config.image_size, config.glyph_classes,
                           config.glyph_samples, config.train_classes, config.test_start, config.glyph_seed)


def _relative_cost(config: Any, key: str) -> float:
    """Rough seconds of meta-training (one CPU thread, measured at the quick preset's shapes)."""
    if key == "cht":
        return 0.08 * config.train_tasks * config.cht_steps
    if key == "merged-ht":
        return 0.12 * config.merged_steps
    width = int(key.rsplit("-w", 1)[1])
    return (0.02 if key.startswith("pn") else 0.04 * (1 + width / 8)) * config.steps


def model_keys(config: Any) -> list[str]:
    """Every model, the longest meta-training first (free worker processes take the next item, so the
    long ones start early and the short ones fill in at the end)."""
    keys = [f"{kind}-w{width}" for width in config.widths for kind in sweep_models(config)]
    keys += ["cht", "merged-ht"] if config.merged_ht else ["cht"]
    return sorted(keys, key=lambda key: -_relative_cost(config, key))


def ht_settings(config: Any, head: str, units: int, width: int, labels: int) -> HTSettings:
    cnn = CNNSpec(channels=width, conv_layers=config.conv_layers, image_size=config.image_size, head=head,
                  head_units=units)
    return HTSettings(cnn=cnn, num_labels=labels, label_dim=config.label_dim, local_features=config.local_features,
                      shared_features=config.shared_features, transformer_layers=config.transformer_layers,
                      heads=config.heads, trained_conv_layers=config.trained_conv_layers)


def build_model(config: Any, key: str, seed: int = 0) -> nn.Module:
    generator = torch.Generator().manual_seed(derive_seed(seed, "init", key))
    if key.startswith("pn-w"):
        spec = CNNSpec(channels=int(key[4:]), conv_layers=config.conv_layers, image_size=config.image_size,
                       head="embedding", head_units=config.embedding_units)
        return TrainedCNN(spec, generator)
    if key.startswith("ht-w"):
        return HyperTransformer(ht_settings(config, "logits", config.ways, int(key[4:]), config.ways), generator)
    if key.startswith("htp-w"):
        return HyperTransformer(ht_settings(config, "embedding", config.embedding_units, int(key[5:]), config.ways),
                                generator)
    labels = config.ways * (config.eval_tasks if key == "merged-ht" else 1)
    return HyperTransformer(ht_settings(config, "embedding", config.embedding_units, config.cht_width, labels), generator)


def model_path(directory: str | Path, key: str) -> Path:
    return Path(directory) / f"{key}.safetensors"


def load_model(config: Any, directory: str | Path, key: str) -> nn.Module:
    model = build_model(config, key)
    model.load_state_dict(load_tensors(model_path(directory, key)))
    return model


def _loss_function(config: Any, key: str, model: nn.Module) -> Callable[[torch.Generator], tuple]:
    """The meta-training loss of one model on episodes drawn from the meta-training classes."""
    train = splits_of(config).train
    episode = dict(ways=config.ways, shots=config.shots, queries=config.queries, unlabelled=config.unlabelled,
                   rotate=config.rotate_classes)
    if key.startswith(("ht-w", "htp-w", "pn-w")):
        loss = logits_episode if key.startswith("ht-w") else prototype_episode
        return lambda generator: loss(model, sample_episodes(train, config.batch, generator=generator, **episode))
    if key == "cht":
        def cht_loss(generator: torch.Generator) -> tuple:
            tasks = sample_sequences(train, config.batch, config.train_tasks, generator=generator, **episode)
            outcome = sequence_outcome(model, tasks, config.objective, config.prototypes)
            return outcome.loss, outcome.class_accuracy[-1].nanmean(dim=0)
        return cht_loss

    def merged_loss(generator: torch.Generator) -> tuple:  # 1 ... eval_tasks tasks merged into one support
        count = int(torch.randint(1, config.eval_tasks + 1, (), generator=generator))
        return prototype_episode(model, merged(sample_sequences(train, config.batch, count, generator=generator,
                                                                **episode)))
    return merged_loss


def meta_worker(payload: tuple[Any, str], ctx: Any) -> Callable[[str], dict[str, Any]]:
    """Worker factory: item ``key`` meta-trains that model and scores it on meta-test episodes."""
    config, directory = payload

    def process(key: str) -> dict[str, Any]:
        torch.manual_seed(derive_seed(ctx.seed, key))
        model = build_model(config, key, ctx.seed)
        steps = config.cht_steps if key == "cht" else config.merged_steps if key == "merged-ht" else config.steps
        checkpoint = Path(directory) / f"{key}.train.pt"
        with ctx.training_progress(f"meta-training {key}", steps, key) as on_step:
            history = meta_train(model, _loss_function(config, key, model), steps, config.learning_rate,
                                 derive_seed(ctx.seed, "episodes", key), checkpoint, on_step=on_step)
        save_tensors(model_path(directory, key), model.state_dict())
        record: dict[str, Any] = {"history": history, "parameters": sum(p.numel() for p in model.parameters())}
        if key.startswith(("ht-w", "htp-w", "pn-w")):
            record["test_accuracy"] = episode_accuracies(config, model, key, ctx.seed).tolist()
        return record

    return process


def episode_accuracies(config: Any, model: nn.Module, key: str, seed: int) -> torch.Tensor:
    """Accuracy on each of ``eval_episodes`` meta-test episodes (the same episodes for every model)."""
    generator = torch.Generator().manual_seed(derive_seed(seed, "test-episodes"))
    loss = logits_episode if key.startswith("ht-w") else prototype_episode
    accuracies = []
    with torch.no_grad():
        for start in range(0, config.eval_episodes, config.eval_batch):
            episode = sample_episodes(splits_of(config).test, min(config.eval_batch, config.eval_episodes - start),
                                      config.ways, config.shots, config.queries, generator, unlabelled=config.unlabelled)
            accuracies.append(loss(model, episode)[1])
    return torch.cat(accuracies)


def test_sequences(config: Any, seed: int, kind: str = "novel") -> list[list]:
    """``eval_sequences`` meta-test sequences of ``eval_tasks`` tasks, in batches (the same for every method)."""
    generator = torch.Generator().manual_seed(derive_seed(seed, "test-sequences", kind))
    batches = []
    for start in range(0, config.eval_sequences, config.eval_batch):
        size = min(config.eval_batch, config.eval_sequences - start)
        batches.append(sample_sequences(splits_of(config).test, size, config.eval_tasks, config.ways, config.shots,
                                        config.queries, generator, kind=kind, unlabelled=config.unlabelled))
    return batches


def evaluate_worker(payload: tuple[Any, str], ctx: Any) -> Callable[[str], dict[str, Any]]:
    """Worker factory: item ``name`` (one of :data:`EVALUATIONS`) scores a method on the test sequences.

    Records hold accuracy matrices ``[t][tau]`` per sequence: ``task`` and/or ``class``.
    """
    config, directory = payload

    def process(name: str) -> dict[str, Any]:
        key = {"cht": "cht", "cht-cached": "cht", "minibatches": "cht", "merged-ht": "merged-ht"}.get(
            name, f"pn-w{config.cht_width}")
        model = load_model(config, directory, key)
        kind = "minibatches" if name == "minibatches" else "novel"
        task, classes = [], []
        for tasks in test_sequences(config, ctx.seed, kind):
            if name == "finetune":
                classes.append(finetune_outcome(model, tasks, config.finetune_steps, config.finetune_learning_rate))
                continue
            with torch.no_grad():
                if name == "merged-ht":
                    classes.append(merged_outcome(model, tasks))
                elif name == "minibatches":
                    task.append(minibatch_accuracy(model, tasks))
                else:
                    outcome = sequence_outcome(model, tasks, prototype_mode="cached" if name == "cht-cached"
                                               else "recomputed")
                    task.append(outcome.task_accuracy)
                    classes.append(outcome.class_accuracy)
        record: dict[str, Any] = {}
        if task:
            record["task"] = torch.cat(task, dim=-1).tolist()
        if classes:
            record["class"] = torch.cat(classes, dim=-1).tolist()
        return record

    return process


def exact_mechanics(config: Any, directory: str | Path, seed: int) -> dict[str, float]:
    """The exact properties of the trained CHT on meta-test tasks (HT paper §3.1; CHT paper §3).

    - the generated weights do not change when the support set is permuted (max |difference|);
    - a sequence of one task through the continual path equals HT's episode (loss and accuracies);
    - with the loss taken only at the last of three tasks, the gradient reaches the weights generated
      at the first task through the chain, and vanishes when the chain is cut.
    """
    model = load_model(config, directory, "cht")
    generator = torch.Generator().manual_seed(derive_seed(seed, "mechanics"))
    tasks = sample_sequences(splits_of(config).test, 4, 3, config.ways, config.shots, config.queries, generator,
                             unlabelled=config.unlabelled)
    first = tasks[0]
    order = torch.randperm(first.support_x.shape[1], generator=generator)
    with torch.no_grad():
        weights = model.generate(first.support_x, first.support_y)
        permuted = model.generate(first.support_x[:, order], first.support_y[:, order])
        single = sequence_outcome(model, [first], objective="task")
        loss, accuracy = prototype_episode(model, first)
    measured = {"permutation_max_abs_difference": max(float((a - b).abs().max()) for a, b in zip(weights, permuted)),
                "single_task_chain_minus_ht": max(abs(float(single.loss - loss)),
                                                  float((single.task_accuracy[0, 0] - accuracy).abs().max()))}
    for name, cut in (("gradient_norm_at_first_task", False), ("gradient_norm_at_first_task_chain_cut", True)):
        chain = generate_chain(model, [(task.support_x, task.support_y) for task in tasks], detach_between_tasks=cut)
        later = sequence_outcome(model, tasks, loss_tasks=[len(tasks) - 1], chain=chain).loss
        gradients = torch.autograd.grad(later, chain[0], allow_unused=True)
        measured[name] = float(sum((g ** 2).sum() for g in gradients if g is not None) ** 0.5)
    return measured
