"""Study ``continual-ht``: HyperTransformer (Zhmoginov, Sandler, Vladymyrov, ICML 2022, arXiv:2201.04182) and
Continual HyperTransformer (Vladymyrov, Zhmoginov, Sandler, TMLR 2024, arXiv:2301.04584).

HT generates all weights of a small CNN from a few-shot support set with a transformer and is
said to pay off most for small CNNs, where a fixed task-independent embedding is not optimal (HT
abstract, §5). CHT feeds the weights generated for task ``t-1`` back in with the support of task
``t``, trains with a prototypical loss over all tasks so far, and is reported to learn task-,
class-incremental and mini-batch sequences without forgetting, with positive backward transfer,
and to extrapolate beyond the number of tasks it was trained on (CHT abstract, §5).

Protocol at CPU scale, on meta-test classes only (Omniglot-like procedural glyphs by default):
1. HT (logits head, every conv layer generated) against a ProtoNet of the same CNN, widths swept
   (``full``: also HT with a prototype head);
2. CHT (embedding head, every layer generated, width ``cht_width``) trained on sequences of
   ``train_tasks`` tasks and evaluated on ``eval_tasks = 2 x train_tasks``, task- and class-
   incrementally, against ConstPN (the ProtoNet of the same width), naive fine-tuning of a shared
   head and (``full``) MergedHT (an upper bound); also one task learned from a stream of mini-batches;
3. the exact mechanics on the trained CHT.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from learnlab.continual.continual_ht_figures import plot_continual, plot_meta_training, plot_width_sweep
from learnlab.continual.continual_ht_runs import (evaluate_worker, evaluations, exact_mechanics, meta_worker,
                                                  model_keys, splits_of)
from learnlab.continual.episodes import check_pool
from learnlab.continual.learning import OBJECTIVES, PROTOTYPES
from learnlab.continual.metrics import average_accuracy, backward_transfer
from learnlab.core import Claim, RunContext, Study, StudyConfig, UserError, above, at_most, is_true, positive, ranged

SMALL_WIDTH = 8  # "small CNNs": the 4- and 8-channel models of the HT paper's App. D
FORGETTING_BOUND = 0.03  # task-1 accuracy within 3 points inside the trained horizon
GRACEFUL_BOUND = 0.10  # ... and within 10 points at twice the horizon (fixed before measuring)
PERMUTATION_BOUND = 1e-5  # float32
EQUALITY_BOUND = 1e-6


@dataclass(frozen=True)
class Config(StudyConfig):
    """Every knob of the study; the defaults are the ``quick`` preset.

    Attributes:
        dataset, data_root: ``glyphs`` (procedural, see ``learnlab.data.glyphs``), ``omniglot``
            (torchvision's layout below ``data_root``) or ``folders`` (class folders below ``data_root``).
        image_size: images are ``image_size`` square (HT uses 28 for Omniglot).
        glyph_classes, glyph_samples, glyph_seed: the procedural dataset.
        train_classes, test_start: classes (after a seeded shuffle) ``[0, train_classes)`` meta-train,
            ``[test_start, C)`` meta-test (HT's Omniglot split: 1150 / 1200 of 1623).
        ways, shots, queries, unlabelled: N-way K-shot tasks with query and unlabelled samples per class.
        rotate_classes: HT's Omniglot augmentation (a random multiple of 90° per class and task).
        conv_layers, widths: the target CNN (4 blocks) and the widths of the HT / ProtoNet sweep (quick: the
            claim's small widths 4 and 8; full: 4 to 32).
        trained_conv_layers: the first conv layers trained instead of generated (0: all generated).
        label_dim, local_features, shared_features, transformer_layers, heads: the generator.
        embedding_units: the prototypical head's width (CHT, MergedHT, ProtoNet).
        cht_width, train_tasks, eval_tasks: CHT's CNN width, its training horizon T and the test length.
        objective, prototypes: CHT's loss (task-, class-incremental or both) and old prototypes
            (recomputed from the stored supports with the newest weights, or cached).
        prototype_sweep, merged_ht: the models reported beside the claims, not read by them (``full``
            and ``smoke``): HT with a prototype head in the width sweep, and MergedHT.
        steps, cht_steps, merged_steps, batch, learning_rate: Adam meta-training (episodes per step).
        finetune_steps, finetune_learning_rate: the naive fine-tuning baseline, per task.
        eval_episodes, eval_sequences, eval_batch: meta-test episodes and sequences.
        workers: processes for the meta-training items and the evaluations.
    """

    dataset: Literal["glyphs", "omniglot", "folders"] = "glyphs"
    data_root: str = ""
    image_size: int = ranged(16, ge=8)
    glyph_classes: int = positive(1623)
    glyph_samples: int = positive(20)
    glyph_seed: int = 0
    train_classes: int = positive(1150)
    test_start: int = positive(1200)
    ways: int = ranged(5, ge=2)
    shots: int = positive(1)
    queries: int = positive(5)
    unlabelled: int = ranged(0, ge=0)
    rotate_classes: bool = True
    conv_layers: int = positive(4)
    widths: tuple[int, ...] = positive((4, 8))
    trained_conv_layers: int = ranged(0, ge=0)
    label_dim: int = positive(32)
    local_features: int = positive(16)
    shared_features: int = positive(32)
    transformer_layers: int = positive(2)
    heads: int = positive(2)
    embedding_units: int = positive(16)
    prototype_sweep: bool = False
    merged_ht: bool = False
    cht_width: int = positive(8)
    train_tasks: int = ranged(3, ge=2)
    eval_tasks: int = ranged(6, ge=2)
    objective: Literal["task", "class", "both"] = "both"
    prototypes: Literal["recomputed", "cached"] = "recomputed"
    steps: int = positive(1500)
    cht_steps: int = positive(1000)
    merged_steps: int = positive(500)
    batch: int = positive(8)
    learning_rate: float = positive(1e-3)
    finetune_steps: int = positive(20)
    finetune_learning_rate: float = positive(1e-2)
    eval_episodes: int = ranged(400, ge=2)
    eval_sequences: int = ranged(200, ge=2)
    eval_batch: int = positive(50)
    workers: int = positive(2)

    def validate(self) -> None:
        if self.objective not in OBJECTIVES or self.prototypes not in PROTOTYPES:
            raise ValueError(f"objective must be one of {OBJECTIVES} and prototypes one of {PROTOTYPES}")
        if self.eval_tasks < self.train_tasks:
            raise ValueError("eval_tasks must be >= train_tasks (the test runs past the trained horizon)")
        if self.trained_conv_layers > self.conv_layers:
            raise ValueError(f"trained_conv_layers must be within 0..{self.conv_layers}")
        if self.cht_width not in self.widths:
            raise ValueError(f"cht_width {self.cht_width} must be one of widths {self.widths} (its ProtoNet is ConstPN)")
        if self.image_size >> self.conv_layers < 1:
            raise ValueError(f"{self.conv_layers} max-pools leave nothing of a {self.image_size}-pixel image")


PRESETS = {
    "smoke": Config(glyph_classes=60, glyph_samples=12, train_classes=36, test_start=40, widths=(4,), cht_width=4,
                    train_tasks=2, eval_tasks=3, label_dim=8, local_features=4, shared_features=8,
                    transformer_layers=1, embedding_units=4, prototype_sweep=True, merged_ht=True, steps=3,
                    cht_steps=3, merged_steps=3, batch=2,
                    finetune_steps=2, eval_episodes=4, eval_sequences=4, eval_batch=2, workers=1),
    "quick": Config(),
    # The HT paper's Omniglot setting (28x28, 8 channels, 3-layer transformers, 20-way) from a local
    # copy (--set data_root=DIR), CHT with 5 tasks, for a GPU.
    "full": Config(dataset="omniglot", image_size=28, ways=20, shots=5, queries=5, widths=(4, 8, 16, 32), cht_width=8,
                   transformer_layers=3, embedding_units=32, prototype_sweep=True, merged_ht=True, train_tasks=5,
                   eval_tasks=10, steps=100_000,
                   cht_steps=50_000, merged_steps=50_000, batch=16, eval_episodes=1024, eval_sequences=512),
}


def _check_data(config: Config) -> None:
    if config.dataset != "glyphs" and not config.data_root:
        raise UserError(f"dataset {config.dataset} needs --set data_root=DIR (a local directory); nothing is downloaded")
    splits = splits_of(config)
    samples = config.shots + config.unlabelled + config.queries
    for pool, tasks in ((splits.train, config.train_tasks), (splits.test, config.eval_tasks)):
        check_pool(pool, tasks * config.ways, samples, what=f"sequences of {tasks} {config.ways}-way tasks")
    check_pool(splits.test, config.ways, config.eval_tasks * (config.shots + config.unlabelled) + config.queries,
               what=f"{config.eval_tasks} mini-batches of a {config.ways}-way task")


def _mean_se(values) -> tuple[float, float]:
    values = np.asarray(values, dtype=float)
    return float(values.mean()), float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else 0.0


def _summarise_sweep(config: Config, records: dict[str, dict[str, Any]]) -> dict[str, Any]:
    sweep, small = {}, []
    for width in config.widths:
        ht, pn = (np.asarray(records[f"{kind}-w{width}"]["test_accuracy"]) for kind in ("ht", "pn"))
        difference, se = _mean_se(ht - pn)  # paired: the same meta-test episodes
        sweep[str(width)] = {"ht": _mean_se(ht), "protonet": _mean_se(pn), "ht_minus_protonet": difference,
                             "difference_se": se, "ht_beats_protonet": difference > 2 * se}
        if config.prototype_sweep:
            htp = np.asarray(records[f"htp-w{width}"]["test_accuracy"])
            prototype_difference, prototype_se = _mean_se(htp - pn)
            sweep[str(width)].update(ht_prototypes=_mean_se(htp), ht_prototypes_minus_protonet=prototype_difference,
                                     ht_prototypes_difference_se=prototype_se)
        if width <= SMALL_WIDTH:
            small.append(sweep[str(width)]["ht_beats_protonet"])
    return {"width_sweep": sweep, "ht_beats_protonet_at_small_widths": bool(small) and all(small)}


def _summarise_continual(config: Config, evaluation: dict[str, dict[str, Any]]) -> dict[str, Any]:
    horizon, length = config.train_tasks, config.eval_tasks
    measured: dict[str, Any] = {}
    for name, record in evaluation.items():
        for scenario in ("task", "class"):
            if scenario in record and name != "minibatches":
                mean = np.asarray(record[scenario]).mean(axis=-1)  # (T, T): after task t, on task tau (NaN: tau > t)
                measured[f"{name}_{scenario}_accuracy"] = [row[:t + 1].tolist() for t, row in enumerate(mean)]
                measured[f"{name}_{scenario}_average_after"] = average_accuracy(mean)
    cht_task = np.asarray(evaluation["cht"]["task"])
    first = cht_task[:, 0]  # task-1 accuracy after each task, per sequence
    measured["cht_task1_drop_at_horizon"], measured["cht_task1_drop_at_horizon_se"] = _mean_se(first[0] - first[horizon - 1])
    measured["cht_task1_drop_at_end"], measured["cht_task1_drop_at_end_se"] = _mean_se(first[0] - first[length - 1])
    for scenario in ("task", "class"):
        per_sequence = [backward_transfer(cht_matrix[:horizon, :horizon])
                        for cht_matrix in np.moveaxis(np.asarray(evaluation["cht"][scenario]), -1, 0)]
        measured[f"cht_{scenario}_bwt_at_horizon"], measured[f"cht_{scenario}_bwt_at_horizon_se"] = _mean_se(per_sequence)
        measured[f"cht_{scenario}_bwt_at_end"] = backward_transfer(np.asarray(evaluation["cht"][scenario]).mean(axis=-1))
    measured["cht_task_bwt_positive"] = (measured["cht_task_bwt_at_horizon"]
                                         > 2 * measured["cht_task_bwt_at_horizon_se"])

    def average_at_horizon(name: str) -> np.ndarray:
        matrices = np.asarray(evaluation[name]["class"])
        return matrices[horizon - 1, :horizon].mean(axis=0)  # per sequence

    difference, se = _mean_se(average_at_horizon("cht") - average_at_horizon("finetune"))
    measured["cht_minus_finetune_class_average_at_horizon"] = difference
    measured["cht_minus_finetune_se"] = se
    measured["cht_beats_finetune_class_incremental"] = difference > 2 * se
    for name in [name for name in ("cht", "cht-cached", "constpn", "merged-ht", "finetune") if name in evaluation]:
        measured[f"{name}_class_average_at_horizon"] = float(average_at_horizon(name).mean())
    measured["minibatches_accuracy_after"] = np.asarray(evaluation["minibatches"]["task"]).mean(axis=-1).tolist()
    return measured


# ---------------------------------------------------------------- run
def run(config: Config, ctx: RunContext) -> dict[str, Any]:
    _check_data(config)
    models = ctx.stages_dir / "models"
    trained = {record["id"]: record for record in ctx.stage_items(
        "meta_training", model_keys(config), meta_worker, (config, str(models)), workers=config.workers,
        description="meta-training (models)").records}
    measured = _summarise_sweep(config, trained)
    evaluation = {record["id"]: record for record in ctx.stage_items(
        "evaluation", evaluations(config), evaluate_worker, (config, str(models)), workers=config.workers,
        description="continual scenarios (methods)").records}
    measured.update(_summarise_continual(config, evaluation))
    measured.update(ctx.stage("mechanics", lambda: exact_mechanics(config, models, ctx.seed)))
    measured["meta_training_history"] = {key: record["history"] for key, record in trained.items()}
    measured["parameters"] = {key: record["parameters"] for key, record in trained.items()}
    plot_width_sweep(ctx, config, measured["width_sweep"])
    plot_continual(ctx, config, measured)
    plot_meta_training(ctx, measured["meta_training_history"])
    return measured


CLAIMS = (
    Claim(
        "C1",
        f"With every conv layer generated, HT (its generated logits head, as in the HT paper) beats a ProtoNet of the "
        f"same CNN on meta-test tasks at every swept width <= {SMALL_WIDTH} channels (paired difference > 2 standard "
        "errors); the width sweep (with prototype_sweep, HT reading a generated embedding by prototypes beside it) "
        "is in figure width_sweep",
        "Zhmoginov et al. 2022 abstract and §5 (generation pays off for small target CNNs)",
        "HT > ProtoNet at 4-8 channels",
        (is_true("ht_beats_protonet_at_small_widths"),),
    ),
    Claim(
        "C2",
        f"CHT does not forget: task-incremental accuracy on the first task drops by at most {FORGETTING_BOUND:.0%} "
        f"from after task 1 to after task T (the trained horizon), and by at most {GRACEFUL_BOUND:.0%} after 2T tasks",
        "Vladymyrov et al. 2024 abstract and §5 (no forgetting; extrapolates to more tasks than trained on)",
        "drop <= 0.03 at T, <= 0.10 at 2T",
        (at_most("cht_task1_drop_at_horizon", FORGETTING_BOUND), at_most("cht_task1_drop_at_end", GRACEFUL_BOUND)),
    ),
    Claim(
        "C3",
        "Class-incremental accuracy over the T tasks (after task T) of CHT is above naive fine-tuning of a shared "
        "head (paired difference > 2 standard errors); backward transfer, ConstPN and (with merged_ht) MergedHT are "
        "reported",
        "Vladymyrov et al. 2024 §5 (class-incremental learning without forgetting)",
        "CHT > fine-tuning",
        (is_true("cht_beats_finetune_class_incremental"),),
    ),
    Claim(
        "C4",
        "Exact mechanics: generated weights are invariant to permuting the support set (float32), CHT with one task "
        "equals HT, and the gradient of a loss taken only at the third task reaches the weights generated at the "
        "first (and vanishes when the chain is cut)",
        "Zhmoginov et al. 2022 §3.1 (no positional encoding of samples); Vladymyrov et al. 2024 §3 (recursion)",
        "<= 1e-5; <= 1e-6; > 0 and 0",
        (at_most("permutation_max_abs_difference", PERMUTATION_BOUND),
         at_most("single_task_chain_minus_ht", EQUALITY_BOUND), above("gradient_norm_at_first_task", 0.0),
         at_most("gradient_norm_at_first_task_chain_cut", 0.0)),
    ),
    Claim(
        "C5",
        "CHT shows positive backward transfer: task-incremental BWT (Avalanche's definition) over the T trained tasks "
        "is above zero by more than 2 standard errors",
        "Vladymyrov et al. 2024 §5 (positive backward transfer)",
        "BWT > 0",
        (is_true("cht_task_bwt_positive"),),
    ),
)

STUDY = Study(
    name="continual-ht",
    title="HyperTransformer and Continual HyperTransformer: CNN weights generated from support sets",
    paper="Zhmoginov, Sandler, Vladymyrov. ICML 2022. arXiv:2201.04182; Vladymyrov, Zhmoginov, Sandler. TMLR 2024. "
          "arXiv:2301.04584",
    presets=PRESETS,
    run=run,
    claims=CLAIMS,
    summary="A transformer writes a small CNN's weights from a support set, and rewrites them task after task.",
    figures=("width_sweep", "continual_accuracy", "meta_training"),
    reference_seconds={"quick": 200},
)
