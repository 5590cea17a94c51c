"""The ``learnlab`` command line: ``list``, ``run``, ``reproduce`` and ``report``.

Every user mistake is reported as one line on stderr with exit code 2; a run that diverges is
recorded as failed and exits with code 1.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from typing import Any, NoReturn

from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from learnlab.core.claims import format_measured
from learnlab.core.errors import UserError
from learnlab.core.registry import PRESETS, Study, get_study, load_studies
from learnlab.core.report import update_readme, write_report
from learnlab.core.runs import RunOptions, execute, prepare_run
from learnlab.core.runtime import DEVICES
from learnlab.core.scheduler import Schedule, reproduce_distributed

VERDICT_STYLE = {"pass": "bold green", "fail": "bold red", "not-run": "yellow"}
STATE_STYLE = {"running": "bold cyan", "done": "green", "reused": "green", "failed": "bold red", "skipped": "yellow"}


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage mistake as one line and exit code 2."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"learnlab: error: {message}\n")
        raise SystemExit(2)


def _add_run_options(parser: argparse.ArgumentParser, preset_default: str) -> None:
    parser.add_argument("--preset", default=preset_default, help=f"one of {', '.join(PRESETS)} (default {preset_default})")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--device", default="auto", help=f"one of {', '.join(DEVICES)} (default auto)")
    parser.add_argument("--out", type=Path, default=Path("runs"), help="directory for run results (default runs)")
    parser.add_argument("--force", action="store_true", help="recompute even if a finished result exists")
    parser.add_argument("--reuse-stale", action="store_true",
                        help="reuse finished runs and cached stages made by other code (marked stale) instead of recomputing")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads; 0 keeps torch's default (default: the study's choice, 1 for most small models)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="learnlab", description="Reproduce studies of how neural networks learn, with checked claims.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    listing = commands.add_parser("list", help="show the registered studies, their papers and claims")
    listing.add_argument("--verbose", action="store_true", help="also show each claim's test and the quick config")

    run = commands.add_parser("run", help="run one study and check its claims")
    run.add_argument("study", help="study id (see `learnlab list`)")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a config value (repeatable)")
    _add_run_options(run, "quick")

    reproduce = commands.add_parser("reproduce", help="run every study (reusing finished runs) and write the report")
    reproduce.add_argument("--only", default="", help="comma-separated study ids to run (default: all)")
    reproduce.add_argument("--skip", default="", help="comma-separated study ids not to run")
    reproduce.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                           help="CPU slots shared by the studies' processes (default: the number of cores)")
    _add_run_options(reproduce, "quick")

    report = commands.add_parser("report", help="write runs/report.html and runs/REPORT.md from finished runs")
    report.add_argument("directory", nargs="?", type=Path, default=Path("runs"), help="runs directory (default runs)")
    report.add_argument("--readme", type=Path, default=None,
                        help="also rewrite the verdict table of this README (between its verdict markers)")
    return parser


def _options(args: argparse.Namespace, overrides: tuple[str, ...] = ()) -> RunOptions:
    return RunOptions(
        preset=args.preset,
        seed=args.seed,
        overrides=overrides,
        device=args.device,
        out=args.out,
        force=args.force,
        quiet=args.quiet,
        threads=args.threads,
        reuse_stale=args.reuse_stale,
    )


def _verdict_table(results: dict[str, Any]) -> Table:
    table = Table(title=f"{results['study']} ({results['preset']}, seed {results['seed']})")
    for column in ("claim", "paper value", "measured", "test", "verdict"):
        table.add_column(column, overflow="fold")
    for claim in results["claims"]:
        style = VERDICT_STYLE[claim["verdict"]]
        table.add_row(
            escape(f"{claim['id']}: {claim['statement']}"),
            escape(claim["paper_value"]),
            escape(format_measured(claim["measured"])),
            escape(claim["criterion"]),
            f"[{style}]{claim['verdict']}[/{style}]",
        )
    return table


def _print_results(console: Console, results: dict[str, Any], run_dir: Path) -> None:
    console.print(_verdict_table(results))
    how = "reused finished run" if results.get("reused") else f"finished in {results['run_seconds']:.1f} s"
    console.print(f"{how}: {run_dir}")
    if results.get("stale"):
        console.print("[bold yellow]stale:[/bold yellow] made (in part) by other code; rerun without --reuse-stale to recompute")
    if results["status"] != "ok":
        console.print(f"[bold red]run failed:[/bold red] {escape(str(results['reason']))}")


def _command_list(args: argparse.Namespace, console: Console) -> int:
    for study in load_studies().values():
        console.print(f"[bold]{study.name}[/bold]  {escape(study.title)}")
        console.print(f"  paper: {escape(study.paper)}")
        if study.summary:
            console.print(f"  {escape(study.summary)}")
        for claim in study.claims:
            console.print(f"  - {claim.id}: {escape(claim.statement)} [dim]({escape(claim.source)}; paper: {escape(claim.paper_value)})[/dim]")
            if args.verbose:
                console.print(f"      test: {escape(claim.criterion())}")
        if args.verbose:
            console.print(f"  quick config: {escape(str(study.config('quick')))}")
        console.print()
    return 0


def _command_run(args: argparse.Namespace, console: Console) -> int:
    study = get_study(args.study)
    options = _options(args, tuple(args.overrides))
    prepared = prepare_run(study, options)
    results = execute(study, options)
    _print_results(console, results, prepared.run_dir)
    return 0 if results["status"] == "ok" else 1


def _study_names(studies: dict[str, Study], listed: str, what: str) -> list[str]:
    names = [name.strip() for name in listed.split(",") if name.strip()]
    unknown = [name for name in names if name not in studies]
    if unknown:
        raise UserError(f"unknown study {unknown[0]!r} in {what}; valid studies: {', '.join(studies)}")
    return names


def _overview(schedule: Schedule) -> Table:
    """The live table of ``reproduce``: state, slots, elapsed and expected time per study."""
    table = Table(title=f"learnlab reproduce ({schedule.options.preset}): {schedule.wall_seconds:.0f} s, "
                        f"{schedule.jobs} slots")
    for column in ("study", "state", "slots", "elapsed", "expected", "note"):
        table.add_column(column)
    for task in schedule.tasks:
        style = STATE_STYLE.get(task.state, "")
        table.add_row(task.name, f"[{style}]{task.state}[/{style}]" if style else task.state, str(task.slots),
                      f"{task.elapsed:.0f} s" if task.started else "", f"{task.expected:.0f} s", escape(task.note))
    return table


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _command_reproduce(args: argparse.Namespace, console: Console) -> int:
    studies = load_studies()
    only = _study_names(studies, args.only, "--only") or list(studies)
    skip = set(_study_names(studies, args.skip, "--skip"))
    if args.jobs < 1:
        raise UserError(f"--jobs must be >= 1, got {args.jobs}")
    selected = [studies[name] for name in studies if name in only and name not in skip]
    options = _options(args)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # started by torchrun
        return reproduce_distributed(selected, options, args.jobs, studies, console)
    schedule = Schedule.plan(selected, options, args.jobs)
    signal.signal(signal.SIGTERM, _interrupt)  # a killed scheduler stops its studies (they resume next time)
    if args.quiet:
        schedule.run()
    else:
        with Live(_overview(schedule), console=console, refresh_per_second=2) as live:
            schedule.run(on_update=lambda current: live.update(_overview(current)))
    html_path, markdown_path = write_report(args.out, studies, wall_seconds=schedule.wall_seconds)
    for task in schedule.tasks:
        if task.state in ("failed", "skipped"):
            console.print(f"[bold red]{task.name} {task.state}[/bold red]: {escape(task.note)}")
    console.print(f"\nreport: {html_path} and {markdown_path} ({schedule.wall_seconds:.0f} s)")
    return 1 if any(task.state in ("failed", "skipped") for task in schedule.tasks) else 0


def _command_report(args: argparse.Namespace, console: Console) -> int:
    if not args.directory.is_dir():
        raise UserError(f"runs directory {args.directory} does not exist")
    studies = load_studies()
    html_path, markdown_path = write_report(args.directory, studies)
    console.print(f"report: {html_path} and {markdown_path}")
    if args.readme is not None:
        update_readme(args.readme, args.directory, studies)
        console.print(f"verdict table: {args.readme}")
    return 0


COMMANDS = {"list": _command_list, "run": _command_run, "reproduce": _command_reproduce, "report": _command_report}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Off a terminal (logs, CI) rich would wrap tables at 80 columns; give them room instead.
    console = Console(width=None if sys.stdout.isatty() else 160)
    try:
        return COMMANDS[args.command](args, console)
    except UserError as error:
        sys.stderr.write(f"learnlab: error: {error}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("learnlab: interrupted; finished stages are kept and the next run resumes\n")
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
