"""The scheduler behind ``learnlab reproduce``: studies as parallel worker processes, in dependency order.

Each study runs as its own process (``learnlab run STUDY ...``, output in ``<out>/logs/<study>.log``)
and holds as many of the ``jobs`` CPU slots as it uses (its ``workers`` times its threads, at most
``jobs``). A study starts when every study it ``requires`` has finished; among the ready ones the
longest expected chain first (its last recorded run time plus that of the studies waiting for it),
so that the long runs, and the studies others need, do not end up last. A study's slots are
what it may use, not what it uses all the time: when the running studies have left at least one
of their slots idle for ``spare_window`` seconds (their process trees' CPU time, and the machine's
idle time, both measured from ``/proc`` on Linux), the next ready study starts beside them, so that
the single-process tail of one study (its last item, a last one-thread stage) overlaps the next.
A study whose current result is already finished is reused without a process. Killing the
scheduler kills its studies; the next ``reproduce`` reuses every finished study and resumes the
interrupted ones from their finished stages and items.

Under ``torchrun`` (or any ``torch.distributed`` launch) the ranks share the studies: rank ``r``
runs the studies dealt to it (longest first, to the least loaded rank, dependencies honoured by
waiting on the required study's result file in the shared ``out`` directory); rank 0 waits for all
and writes the report.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from learnlab.core.io import read_json
from learnlab.core.registry import Study
from learnlab.core.runs import RESULTS_FILE, RunOptions, finished_results, prepare_run, reusable_results

WAITING, RUNNING, DONE, REUSED, FAILED, SKIPPED = "waiting", "running", "done", "reused", "failed", "skipped"
FINISHED = (DONE, REUSED, FAILED, SKIPPED)
DEFAULT_EXPECTED_SECONDS = 300.0
SPARE_WINDOW = 10.0  # seconds a slot must stay idle before the next study starts in it
SPARE_THRESHOLD = 0.75  # idle cores (measured over the window) that count as a free slot
LAUNCHER_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "GROUP_WORLD_SIZE",
                      "ROLE_RANK", "ROLE_WORLD_SIZE", "ROLE_NAME", "MASTER_ADDR", "MASTER_PORT")


@dataclass
class Task:
    """One study's place in the schedule."""

    study: Study
    slots: int
    expected: float  # seconds, from the last recorded run (or a default)
    state: str = WAITING
    started: float | None = None
    finished: float | None = None
    elapsed: float = 0.0
    process: subprocess.Popen | None = None
    log: Path | None = None
    results: dict[str, Any] | None = None
    note: str = ""

    @property
    def name(self) -> str:
        return self.study.name


def slots_of(study: Study, options: RunOptions, jobs: int) -> int:
    """CPU slots a study occupies: its worker processes times its threads, within 1 .. ``jobs``."""
    config = prepare_run(study, options).config
    threads = options.threads if options.threads else study.threads
    return max(1, min(jobs, int(getattr(config, "workers", 1)) * max(1, threads)))


def expected_seconds(study: Study, options: RunOptions) -> float:
    """The run time of the latest finished run of this study and preset under ``out`` (any code or config);
    without one, the study's reference time for the preset, else a default."""
    latest: tuple[str, float] | None = None
    for path in Path(options.out).glob(f"{study.name}/{options.preset}-seed*/{RESULTS_FILE}"):
        try:
            results = read_json(path)
        except ValueError:
            continue
        stamp = results.get("finished_at", "")
        if results.get("status") == "ok" and (latest is None or stamp > latest[0]):
            latest = (stamp, float(results.get("run_seconds", DEFAULT_EXPECTED_SECONDS)))
    if latest:
        return latest[1]
    return float(study.reference_seconds.get(options.preset, DEFAULT_EXPECTED_SECONDS))


def run_command(study: Study, options: RunOptions, threads: int | None = None) -> list[str]:
    """``learnlab run`` for one study with the reproduce options, as a process of this Python."""
    command = [sys.executable, "-m", "learnlab", "run", study.name, "--preset", options.preset, "--seed",
               str(options.seed), "--device", options.device, "--out", str(options.out), "--quiet"]
    for override in options.overrides:
        command += ["--set", override]
    if options.force:
        command.append("--force")
    if options.reuse_stale:
        command.append("--reuse-stale")
    if threads is not None:
        command += ["--threads", str(threads)]
    return command


def _failed_elsewhere(study: Study, options: RunOptions) -> bool:
    path = prepare_run(study, options).run_dir / RESULTS_FILE
    try:
        return path.exists() and read_json(path).get("status") != "ok"
    except ValueError:
        return False


def _proc_stat_fields(pid: int | str) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()  # fields from the third (state) on; the name may hold spaces


def process_tree_cpu_seconds(pids: Sequence[int]) -> float | None:
    """CPU seconds (user and system, the reaped children's included) of the processes ``pids`` and
    all their live descendants; ``None`` where ``/proc`` is not there to read."""
    if not Path("/proc/self/stat").exists():
        return None
    stats = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _proc_stat_fields(entry.name)
            if fields is not None:
                stats[int(entry.name)] = fields
    children: dict[int, list[int]] = {}
    for pid, fields in stats.items():
        children.setdefault(int(fields[1]), []).append(pid)
    ticks, pending, seen = 0, list(pids), set()
    while pending:
        pid = pending.pop()
        if pid in seen or pid not in stats:
            continue
        seen.add(pid)
        ticks += sum(int(value) for value in stats[pid][11:15])  # utime, stime, cutime, cstime
        pending += children.get(pid, [])
    return ticks / os.sysconf("SC_CLK_TCK")


def machine_idle_seconds() -> float | None:
    """Idle CPU seconds of the whole machine since boot (all cores; ``None`` without ``/proc/stat``)."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    return (int(fields[4]) + int(fields[5])) / os.sysconf("SC_CLK_TCK")  # idle and iowait


@dataclass
class SpareMeter:
    """Idle slots among the running studies' ``jobs``, measured over the last ``window`` seconds
    (the least of the slots they leave unused and the machine's idle cores); reset at every start
    and finish, so that only a steady state is measured."""

    jobs: int
    window: float = SPARE_WINDOW
    samples: list[tuple[float, float, float]] = field(default_factory=list)

    def reset(self) -> None:
        self.samples.clear()

    def sample(self, pids: Sequence[int]) -> None:
        used, idle = process_tree_cpu_seconds(pids), machine_idle_seconds()
        if used is not None and idle is not None:
            self.samples.append((time.perf_counter(), used, idle))

    def spare(self) -> float:
        if not self.samples or self.samples[-1][0] - self.samples[0][0] < self.window:
            return 0.0
        now, used, idle = self.samples[-1]
        first = next(sample for sample in reversed(self.samples) if now - sample[0] >= self.window)
        self.samples = self.samples[self.samples.index(first):]
        seconds = now - first[0]
        return min(self.jobs - (used - first[1]) / seconds, (idle - first[2]) / seconds)


@dataclass
class Schedule:
    """Studies in dependency order with their slots and expected times; :meth:`run` executes them."""

    tasks: list[Task]
    jobs: int
    options: RunOptions
    elsewhere: dict[str, Study] = field(default_factory=dict)  # required studies run by other ranks
    env: dict[str, str] = field(default_factory=dict)  # extra environment of the studies' processes
    started: float = field(default_factory=time.perf_counter)
    spare_window: float = SPARE_WINDOW

    @classmethod
    def plan(cls, studies: Sequence[Study], options: RunOptions, jobs: int,
             elsewhere: dict[str, Study] | None = None) -> "Schedule":
        tasks = [Task(study, slots_of(study, options, jobs), expected_seconds(study, options)) for study in studies]
        return cls(tasks, jobs, options, dict(elsewhere or {}))

    def _by_name(self) -> dict[str, Task]:
        return {task.name: task for task in self.tasks}

    def _ready(self) -> list[Task]:
        tasks = self._by_name()
        ready = []
        for task in self.tasks:
            if task.state != WAITING:
                continue
            required = [tasks[name] for name in task.study.requires if name in tasks]
            blocked = [other.name for other in required if other.state in (FAILED, SKIPPED)]
            blocked += [name for name in task.study.requires if name in self.elsewhere and _failed_elsewhere(
                self.elsewhere[name], self.options)]
            if blocked:
                task.state, task.note = SKIPPED, f"needs {blocked[0]}, which did not finish"
            elif all(other.state in (DONE, REUSED) for other in required) and all(
                    reusable_results(self.elsewhere[name], self.options) is not None
                    for name in task.study.requires if name in self.elsewhere):
                ready.append(task)
        return sorted(ready, key=lambda task: -self.critical_path(task.name))

    def critical_path(self, name: str) -> float:
        """Expected seconds from starting ``name`` to finishing the longest chain of studies that need it,
        so that a study others wait for (the world model) starts before an equally long independent one."""
        tasks = self._by_name()
        dependents = [task.name for task in self.tasks if name in task.study.requires]
        return tasks[name].expected + max((self.critical_path(other) for other in dependents), default=0.0)

    def _start(self, task: Task) -> None:
        logs = Path(self.options.out) / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        task.log = logs / f"{task.name}.log"
        handle = task.log.open("w")
        env = {key: value for key, value in os.environ.items() if key not in LAUNCHER_VARIABLES
               and not key.startswith("TORCHELASTIC_")}  # a study process is not a rank of this launch
        task.process = subprocess.Popen(run_command(task.study, self.options, self.options.threads), stdout=handle,
                                        stderr=subprocess.STDOUT, env={**env, "PYTHONUNBUFFERED": "1", **self.env})
        handle.close()
        task.state, task.started = RUNNING, time.perf_counter()

    def _collect(self, task: Task) -> None:
        code = task.process.poll() if task.process else None
        if code is None:
            task.elapsed = time.perf_counter() - task.started
            return
        task.finished = time.perf_counter()
        task.elapsed = task.finished - task.started
        task.results = finished_results(prepare_run(task.study, self.options).run_dir)
        task.state = DONE if code == 0 and task.results is not None else FAILED
        if task.state == FAILED:
            task.note = f"exit code {code}; see {task.log}"

    def run(self, on_update: Callable[["Schedule"], None] | None = None, poll: float = 0.5) -> list[Task]:
        """Run every task; ``on_update`` is called after every change and every ``poll`` seconds."""
        for task in self.tasks:
            reused = reusable_results(task.study, self.options)
            if reused is not None:
                task.state, task.results, task.elapsed = REUSED, reused, 0.0
        meter = SpareMeter(self.jobs, self.spare_window)
        try:
            while any(task.state not in FINISHED for task in self.tasks):
                for task in [task for task in self.tasks if task.state == RUNNING]:
                    self._collect(task)
                    if task.state != RUNNING:
                        meter.reset()
                running = [task for task in self.tasks if task.state == RUNNING]
                if any(task.state == WAITING for task in self.tasks):  # only a waiting study needs the measure
                    meter.sample([task.process.pid for task in running if task.process is not None])
                free = self.jobs - sum(task.slots for task in running)
                for task in self._ready():
                    idle = not any(t.state == RUNNING for t in self.tasks)
                    if task.slots <= free or idle or meter.spare() >= SPARE_THRESHOLD:
                        self._start(task)
                        free -= task.slots
                        meter.reset()
                if on_update is not None:
                    on_update(self)
                if any(task.state in (RUNNING, WAITING) for task in self.tasks):
                    time.sleep(poll)
        finally:
            for task in self.tasks:
                if task.process is not None and task.process.poll() is None:
                    task.process.terminate()
                    task.process.wait()
        if on_update is not None:
            on_update(self)
        return self.tasks

    @property
    def wall_seconds(self) -> float:
        return time.perf_counter() - self.started


def deal_to_ranks(tasks: Sequence[Task], ranks: int) -> list[list[str]]:
    """Studies per rank: longest expected first, each to the least loaded rank."""
    load, dealt = [0.0] * ranks, [[] for _ in range(ranks)]
    for task in sorted(tasks, key=lambda task: -task.expected):
        rank = min(range(ranks), key=lambda r: load[r])
        dealt[rank].append(task.name)
        load[rank] += task.expected
    return dealt


def reproduce_distributed(selected: Sequence[Study], options: RunOptions, jobs: int, studies: dict[str, Study],
                          console: Any) -> int:
    """``torchrun ... -m learnlab reproduce``: the studies dealt over the ranks, rank 0 writes the report.

    The ranks must share ``options.out`` (one machine, or a shared file system). Each rank gets
    ``jobs / LOCAL_WORLD_SIZE`` slots and, with ``--device cuda``, the GPU of its local rank.
    """
    from datetime import timedelta

    import torch.distributed as dist

    from learnlab.core.report import write_report

    owned = not dist.is_initialized()
    if owned:
        dist.init_process_group("gloo", timeout=timedelta(days=2))
    try:
        rank, size = dist.get_rank(), dist.get_world_size()
        local = int(os.environ.get("LOCAL_WORLD_SIZE", size))
        share = max(1, jobs // max(1, local))
        dealt = deal_to_ranks(Schedule.plan(selected, options, share).tasks, size)
        mine = [study for study in selected if study.name in dealt[rank]]
        elsewhere = {name: studies[name] for other, names in enumerate(dealt) if other != rank for name in names}
        env = {"CUDA_VISIBLE_DEVICES": os.environ.get("LOCAL_RANK", "0")} if options.device == "cuda" else {}
        schedule = Schedule.plan(mine, options, share, elsewhere)
        schedule.env.update(env)
        started = time.perf_counter()
        schedule.run()
        states: list[Any] = [None] * size
        dist.all_gather_object(states, {task.name: task.state for task in schedule.tasks})
        failed = any(state in (FAILED, SKIPPED) for ranked in states for state in ranked.values())
        if rank == 0:
            html_path, markdown_path = write_report(options.out, studies, wall_seconds=time.perf_counter() - started)
            console.print(f"report: {html_path} and {markdown_path} ({size} ranks: "
                          + "; ".join(f"rank {r}: {', '.join(names) or '-'}" for r, names in enumerate(dealt)) + ")")
        dist.barrier()
        return 1 if failed else 0
    finally:
        if owned:
            dist.destroy_process_group()
