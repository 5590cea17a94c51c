"""Communication graphs between agents: who reads whose predictions.

A graph is a tuple of neighbour tuples, ``neighbours[i]`` = the agents whose public-batch
predictions agent ``i`` distils from (undirected unless given as directed edges). Builders:
``complete``, ``cycle``, ``random-regular`` (degree ``d``), ``islands`` (complete graphs on
disjoint groups, no edges between them) and an edge list (``"0-1,1-2"`` or a file of ``i j`` lines).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from learnlab.core.errors import UserError

Graph = tuple[tuple[int, ...], ...]
GRAPHS = ("complete", "cycle", "random-regular", "islands", "edges")


def _from_edges(agents: int, edges: list[tuple[int, int]]) -> Graph:
    neighbours: list[set[int]] = [set() for _ in range(agents)]
    for a, b in edges:
        if not (0 <= a < agents and 0 <= b < agents) or a == b:
            raise UserError(f"edge {a}-{b} is not between two different agents of 0..{agents - 1}")
        neighbours[a].add(b)
        neighbours[b].add(a)
    return tuple(tuple(sorted(n)) for n in neighbours)


def complete(agents: int) -> Graph:
    return tuple(tuple(j for j in range(agents) if j != i) for i in range(agents))


def cycle(agents: int) -> Graph:
    if agents < 3:
        return complete(agents)
    return _from_edges(agents, [(i, (i + 1) % agents) for i in range(agents)])


def random_regular(agents: int, degree: int, seed: int = 0) -> Graph:
    """A random ``degree``-regular graph (pairing model, redrawn until simple)."""
    if degree >= agents or (agents * degree) % 2:
        raise UserError(f"no {degree}-regular graph on {agents} agents (needs degree < agents and an even agents x degree)")
    rng = np.random.default_rng(seed)
    for _ in range(1000):
        stubs = rng.permutation(np.repeat(np.arange(agents), degree)).reshape(-1, 2)
        pairs = {tuple(sorted(pair)) for pair in stubs.tolist()}
        if len(pairs) == len(stubs) and all(a != b for a, b in pairs):
            return _from_edges(agents, sorted(pairs))
    raise UserError(f"could not draw a simple {degree}-regular graph on {agents} agents")


def islands(agents: int, groups: int) -> Graph:
    """``groups`` complete graphs on consecutive blocks of agents, disconnected from each other."""
    if not 1 <= groups <= agents:
        raise UserError(f"islands need 1 <= groups <= agents, got {groups} groups of {agents} agents")
    island = [i * groups // agents for i in range(agents)]
    return tuple(tuple(j for j in range(agents) if j != i and island[j] == island[i]) for i in range(agents))


def island_of(graph: Graph) -> list[int]:
    """The connected component of every agent (numbered by their smallest agent)."""
    component = list(range(len(graph)))
    for start in range(len(graph)):
        stack, seen = [start], {start}
        while stack:
            for other in graph[stack.pop()]:
                if other not in seen:
                    seen.add(other)
                    stack.append(other)
        component[start] = min(seen)
    return component


def parse_edges(spec: str) -> list[tuple[int, int]]:
    """Edges from ``"0-1,1-2"`` or from a file with one ``i j`` (or ``i-j``) pair per line."""
    path = Path(spec).expanduser()
    lines = path.read_text().splitlines() if path.is_file() else spec.split(",")
    edges = []
    for number, line in enumerate(lines, 1):
        text = line.split("#")[0].strip().replace("-", " ")
        if not text:
            continue
        parts = text.split()
        if len(parts) != 2 or not all(part.isdigit() for part in parts):
            where = f"{path}:{number}" if path.is_file() else f"edge {line.strip()!r}"
            raise UserError(f"{where}: expected two agent indices such as 0-1")
        edges.append((int(parts[0]), int(parts[1])))
    if not edges:
        raise UserError(f"no edges in {spec!r}")
    return edges


def build_graph(name: str, agents: int, degree: int = 2, groups: int = 2, edges: str = "", seed: int = 0) -> Graph:
    """The named graph (see the module docstring); unknown names are one-line errors."""
    if name == "complete":
        return complete(agents)
    if name == "cycle":
        return cycle(agents)
    if name == "random-regular":
        return random_regular(agents, degree, seed)
    if name == "islands":
        return islands(agents, groups)
    if name == "edges":
        return _from_edges(agents, parse_edges(edges))
    raise UserError(f"unknown graph {name!r}; valid graphs: {', '.join(GRAPHS)}")
