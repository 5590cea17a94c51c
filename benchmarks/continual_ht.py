"""Speed of the HyperTransformer on CPU (one thread), at the continual-ht study's quick shapes.

1. Meta-training episodes per second (forward + backward + Adam) for HT (logits head, every layer
   generated), CHT (a chain of T = 3 tasks, the O(T^2) prototypical loss) and the same-size
   ProtoNet, with 1, 8 and 32 episodes batched into one step (the CNNs of a batch run as one
   grouped convolution).
2. Generating a CNN from one support set (no gradient), in milliseconds, and the CNN's forward pass.

Shapes: 5-way 1-shot, 5 queries per class, 16x16 glyphs, 8 channels, 2-layer generators.
Run: ``.venv/bin/python benchmarks/continual_ht.py [--threads 1]``.
"""

from __future__ import annotations

import argparse
import time

import torch

from learnlab.continual.episodes import sample_episodes, sample_sequences
from learnlab.continual.hypertransformer import HTSettings, HyperTransformer, TrainedCNN
from learnlab.continual.learning import embed, logits_episode, prototype_episode, sequence_outcome
from learnlab.continual.target_cnn import CNNSpec
from learnlab.data.glyphs import generate_glyphs

WAYS, SHOTS, QUERIES, SIZE, WIDTH, TASKS = 5, 1, 5, 16, 8, 3


def models() -> dict[str, torch.nn.Module]:
    def settings(head: str, units: int) -> HTSettings:
        return HTSettings(cnn=CNNSpec(channels=WIDTH, image_size=SIZE, head=head, head_units=units), num_labels=WAYS)

    return {"HT": HyperTransformer(settings("logits", WAYS)), "CHT (T=3)": HyperTransformer(settings("embedding", 16)),
            "ProtoNet": TrainedCNN(CNNSpec(channels=WIDTH, image_size=SIZE, head="embedding", head_units=16))}


def loss_of(name: str, model: torch.nn.Module, pool, batch: int, generator: torch.Generator) -> torch.Tensor:
    if name == "HT":
        return logits_episode(model, sample_episodes(pool, batch, WAYS, SHOTS, QUERIES, generator))[0]
    if name == "ProtoNet":
        return prototype_episode(model, sample_episodes(pool, batch, WAYS, SHOTS, QUERIES, generator))[0]
    return sequence_outcome(model, sample_sequences(pool, batch, TASKS, WAYS, SHOTS, QUERIES, generator)).loss


def episodes_per_second(name: str, model: torch.nn.Module, pool, batch: int, seconds: float = 3.0) -> float:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    def step() -> None:
        loss = loss_of(name, model, pool, batch, generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    for _ in range(2):  # warm-up
        step()
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        step()
        steps += 1
    return steps * batch / (time.perf_counter() - start)


def milliseconds(call, repeats: int = 50) -> float:
    for _ in range(3):
        call()
    start = time.perf_counter()
    for _ in range(repeats):
        call()
    return 1000 * (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    pool = generate_glyphs(200, 20, SIZE)
    print(f"CPU threads: {args.threads}; {WAYS}-way {SHOTS}-shot, {QUERIES} queries per class, {SIZE}x{SIZE}, "
          f"{WIDTH} channels")
    print(f"\n{'model':<12}" + "".join(f"{f'batch {b}':>14}" for b in (1, 8, 32)) + "   (meta-training episodes / s)", flush=True)
    for name, model in models().items():
        rates = [episodes_per_second(name, model, pool, batch) for batch in (1, 8, 32)]
        print(f"{name:<12}" + "".join(f"{rate:>14.1f}" for rate in rates), flush=True)
    model = models()["HT"]
    episode = sample_episodes(pool, 1, WAYS, SHOTS, QUERIES, torch.Generator().manual_seed(1))
    with torch.no_grad():
        generate = milliseconds(lambda: model.generate(episode.support_x, episode.support_y))
        weights = model.generate(episode.support_x, episode.support_y)
        apply = milliseconds(lambda: embed(model, weights, episode.query_x))
    print(f"\ngenerating a CNN ({sum(w.numel() for w in weights)} weights) from a {WAYS}-way {SHOTS}-shot support set: "
          f"{generate:.2f} ms; classifying its {episode.query_x.shape[1]} queries: {apply:.2f} ms")


if __name__ == "__main__":
    main()
