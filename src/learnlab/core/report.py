"""The report: every claim's paper value, measured value and verdict, then a section per study.

``write_report(runs_dir)`` writes ``REPORT.md`` (figures linked) and ``report.html``
(self-contained, figures embedded as base64) into ``runs_dir``. The latest finished run of each
(study, preset) pair is reported; a run made by other code than the registered study's current
code (or resumed from stages made by it) is marked STALE.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from learnlab.core.claims import format_measured
from learnlab.core.errors import UserError
from learnlab.core.io import read_json, write_text
from learnlab.core.registry import PRESETS, Study
from learnlab.core.runs import RESULTS_FILE, study_code_version

VERDICT_MARK = {"pass": "PASS", "fail": "FAIL", "not-run": "NOT RUN"}
VERDICT_COLOR = {"pass": "#1b7f3b", "fail": "#b3261e", "not-run": "#8a6d00"}


def collect_runs(runs_dir: Path, study_order: Sequence[str] = (), studies: dict[str, Study] | None = None) -> list[dict[str, Any]]:
    """Latest ``results.json`` per (study, preset) under ``runs_dir``, in registry then preset order.

    With ``studies`` given, a run whose code version differs from its study's current one gets
    ``stale: True``.
    """
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(Path(runs_dir).glob(f"*/*/{RESULTS_FILE}")):
        try:
            results = read_json(path)
        except ValueError:
            continue
        results["run_dir"] = str(path.parent.relative_to(runs_dir))
        study = (studies or {}).get(results.get("study", ""))
        if study is not None and results.get("code_version") != study_code_version(study):
            results["stale"] = True
        key = (results.get("study", ""), results.get("preset", ""))
        if key not in latest or results.get("finished_at", "") > latest[key].get("finished_at", ""):
            latest[key] = results

    def order(key: tuple[str, str]) -> tuple[int, str, int]:
        study, preset = key
        rank = study_order.index(study) if study in study_order else len(study_order)
        return (rank, study, PRESETS.index(preset) if preset in PRESETS else len(PRESETS))

    return [latest[key] for key in sorted(latest, key=order)]


def _scalar_measurements(measured: dict[str, Any]) -> list[tuple[str, Any]]:
    return [(name, value) for name, value in measured.items() if isinstance(value, (int, float, bool, str))]


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _cell(text: Any) -> str:
    """Text safe inside a Markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _threads(count: int) -> str:
    return f"{count} thread" + ("" if count == 1 else "s")


STALE_NOTE = "STALE: made (in part) by other code than the current study code; rerun to refresh"


def summary(runs: list[dict[str, Any]], wall_seconds: float | None = None) -> dict[str, Any]:
    """Per run: claims passed / failed / not run, run and CPU time, stale; totals and the machine."""
    rows = [{"study": run["study"], "preset": run["preset"], "status": run["status"], "stale": bool(run.get("stale")),
             **{verdict: sum(c["verdict"] == verdict for c in run["claims"]) for verdict in VERDICT_MARK},
             "run_seconds": float(run.get("run_seconds", 0.0)), "cpu_seconds": run.get("cpu_seconds")} for run in runs]
    machines = sorted({run["environment"].get("machine", "") for run in runs} - {""})
    return {"rows": rows, "run_seconds": sum(row["run_seconds"] for row in rows),
            "cpu_seconds": sum(row["cpu_seconds"] or 0.0 for row in rows), "wall_seconds": wall_seconds,
            "machines": machines, **{verdict: sum(row[verdict] for row in rows) for verdict in VERDICT_MARK}}


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds / 60:.1f} min" if seconds >= 120 else f"{seconds:.0f} s"


def summary_lines(totals: dict[str, Any]) -> list[str]:
    """The summary as Markdown: one line of totals and a table of studies."""
    wall = f"; this reproduce: {_duration(totals['wall_seconds'])} wall" if totals["wall_seconds"] is not None else ""
    lines = [f"**{totals['pass']} claims pass, {totals['fail']} fail, {totals['not-run']} not run** over "
             f"{len(totals['rows'])} runs; run time {_duration(totals['run_seconds'])}, CPU time "
             f"{_duration(totals['cpu_seconds'])}{wall}; machine: {', '.join(totals['machines']) or 'unknown'}.", "",
             "| study | preset | pass | fail | not run | run time | CPU time | status |", "|---|---|---|---|---|---|---|---|"]
    for row in totals["rows"]:
        status = row["status"] + (" (STALE)" if row["stale"] else "")
        lines.append(f"| {row['study']} | {row['preset']} | {row['pass']} | {row['fail']} | {row['not-run']} | "
                     f"{_duration(row['run_seconds'])} | {_duration(row['cpu_seconds'])} | {status} |")
    return lines


def render_markdown(runs: list[dict[str, Any]], generated: str, wall_seconds: float | None = None) -> str:
    lines = ["# learnlab report", "", f"Generated {generated}.", ""]
    if not runs:
        return "\n".join(lines + ["No finished runs found.", ""])
    lines += summary_lines(summary(runs, wall_seconds)) + [""]
    lines += [
        "| study | preset | claim | paper value (source) | measured | test | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        for claim in run["claims"]:
            cells = [
                run["study"],
                run["preset"],
                f"{claim['id']}: {claim['statement']}",
                f"{claim['paper_value']} ({claim['source']})",
                format_measured(claim["measured"]),
                f"`{claim['criterion']}`",
                f"**{VERDICT_MARK[claim['verdict']]}**" + (" (stale)" if run.get("stale") else ""),
            ]
            lines.append("| " + " | ".join(_cell(cell) for cell in cells) + " |")
    for run in runs:
        lines += ["", f"## {run['study']} ({run['preset']}): {run['title']}", "", f"*{run['paper']}*", ""]
        lines.append(
            f"Run `{run['run_dir']}`, seed {run['seed']}, {run['run_seconds']:.1f} s on "
            f"{run['environment']['device']} ({_threads(run['environment']['threads'])}); status **{run['status']}**"
            + (f": {run['reason']}" if run.get("reason") else "")
        )
        if run.get("stale"):
            lines += ["", f"**{STALE_NOTE}.**"]
        lines += ["", "| measured | value |", "|---|---|"]
        lines += [f"| {_cell(name)} | {_cell(_format_value(value))} |" for name, value in _scalar_measurements(run["measured"])]
        for figure in run.get("figures", []):
            lines += ["", f"![{figure}]({run['run_dir']}/figures/{figure})"]
    return "\n".join(lines) + "\n"


def _embedded_image(path: Path) -> str:
    if not path.exists():
        return f"<p>missing figure {html.escape(path.name)}</p>"
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(path.name)}"><figcaption>{html.escape(path.name)}</figcaption></figure>'


def _summary_html(totals: dict[str, Any]) -> list[str]:
    esc = html.escape
    wall = f"; this reproduce: {_duration(totals['wall_seconds'])} wall" if totals["wall_seconds"] is not None else ""
    parts = [f"<p class='summary'><b>{totals['pass']} claims pass, {totals['fail']} fail, {totals['not-run']} not run</b> "
             f"over {len(totals['rows'])} runs; run time {_duration(totals['run_seconds'])}, CPU time "
             f"{_duration(totals['cpu_seconds'])}{wall}; machine: {esc(', '.join(totals['machines']) or 'unknown')}.</p>",
             "<table><tr><th>study</th><th>preset</th><th>pass</th><th>fail</th><th>not run</th><th>run time</th>"
             "<th>CPU time</th><th>status</th></tr>"]
    for row in totals["rows"]:
        stale = " <b style='color:#b3261e'>STALE</b>" if row["stale"] else ""
        parts.append(f"<tr><td><a href='#{esc(row['study'])}-{esc(row['preset'])}'>{esc(row['study'])}</a></td>"
                     f"<td>{esc(row['preset'])}</td><td>{row['pass']}</td><td>{row['fail']}</td><td>{row['not-run']}</td>"
                     f"<td>{_duration(row['run_seconds'])}</td><td>{_duration(row['cpu_seconds'])}</td>"
                     f"<td>{esc(row['status'])}{stale}</td></tr>")
    return parts + ["</table>"]


def render_html(runs: list[dict[str, Any]], runs_dir: Path, generated: str, wall_seconds: float | None = None) -> str:
    esc = html.escape
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>learnlab report</title><style>",
        "body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}",
        ".summary{font-size:1.05em}",
        "table{border-collapse:collapse;margin:1em 0;font-size:0.9em;max-width:100%}",
        "td,th{border:1px solid #ccc;padding:4px 8px;vertical-align:top;overflow-wrap:anywhere}",
        "table.claims{table-layout:fixed;width:100%}table.claims col.narrow{width:7em}table.claims col.verdict{width:6.5em}",
        "th{background:#f3f3f3}code{font-size:0.9em}img{max-width:100%;border:1px solid #ddd}figure{margin:1em 0}",
        ".verdict{font-weight:bold;color:white;padding:2px 6px;border-radius:3px;white-space:nowrap}",
        "</style></head><body>",
        f"<h1>learnlab report</h1><p>Generated {esc(generated)}.</p>",
    ]
    if not runs:
        parts.append("<p>No finished runs found.</p>")
    else:
        parts += _summary_html(summary(runs, wall_seconds))
        parts.append("<table class='claims'><col class='narrow'><col class='narrow'><col><col><col><col><col class='verdict'>"
                     "<tr><th>study</th><th>preset</th><th>claim</th><th>paper value (source)</th><th>measured</th>"
                     "<th>test</th><th>verdict</th></tr>")
        for run in runs:
            for claim in run["claims"]:
                color = VERDICT_COLOR[claim["verdict"]]
                parts.append(
                    f"<tr><td>{esc(run['study'])}</td><td>{esc(run['preset'])}</td>"
                    f"<td><b>{esc(claim['id'])}</b>: {esc(claim['statement'])}</td>"
                    f"<td>{esc(claim['paper_value'])} <i>({esc(claim['source'])})</i></td>"
                    f"<td>{esc(format_measured(claim['measured']))}</td><td><code>{esc(claim['criterion'])}</code></td>"
                    f"<td><span class='verdict' style='background:{color}'>{VERDICT_MARK[claim['verdict']]}</span>"
                    + (" <b>stale</b>" if run.get("stale") else "") + "</td></tr>"
                )
        parts.append("</table>")
    for run in runs:
        parts.append(f"<h2 id='{esc(run['study'])}-{esc(run['preset'])}'>{esc(run['study'])} ({esc(run['preset'])}): "
                     f"{esc(run['title'])}</h2><p><i>{esc(run['paper'])}</i></p>")
        reason = f": {esc(run['reason'])}" if run.get("reason") else ""
        parts.append(
            f"<p>Run <code>{esc(run['run_dir'])}</code>, seed {run['seed']}, {run['run_seconds']:.1f} s on "
            f"{esc(run['environment']['device'])} ({_threads(run['environment']['threads'])}); status <b>{esc(run['status'])}</b>{reason}</p>"
        )
        if run.get("stale"):
            parts.append(f"<p><b style='color:#b3261e'>{esc(STALE_NOTE)}.</b></p>")
        parts.append("<table><tr><th>measured</th><th>value</th></tr>")
        parts += [f"<tr><td>{esc(name)}</td><td>{esc(_format_value(value))}</td></tr>" for name, value in _scalar_measurements(run["measured"])]
        parts.append("</table>")
        parts += [_embedded_image(runs_dir / run["run_dir"] / "figures" / figure) for figure in run.get("figures", [])]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


README_START = "<!-- verdicts: generated by `learnlab report --readme README.md` from the runs; do not edit by hand -->"
README_END = "<!-- /verdicts -->"


def verdict_table(runs_dir: Path, studies: dict[str, Study], preset: str = "quick") -> str:
    """The README's table of studies: title, area and the verdicts of each study's latest ``preset`` run."""
    runs = {run["study"]: run for run in collect_runs(runs_dir, list(studies), studies) if run["preset"] == preset}
    lines = [f"| study | what it reproduces | area | {preset} verdicts |", "|---|---|---|---|"]
    for name, study in studies.items():
        run = runs.get(name)
        if run is None:
            verdict = "not run yet"
        else:
            counts = {verdict: [c["id"] for c in run["claims"] if c["verdict"] == verdict] for verdict in VERDICT_MARK}
            verdict = ", ".join(f"{len(ids)} {verdict}" + (f" ({', '.join(ids)})" if verdict != "pass" else "")
                                for verdict, ids in counts.items() if ids) or "no claims"
            verdict += f"; {_duration(run.get('run_seconds'))}" + (" (STALE)" if run.get("stale") else "")
            if run["status"] != "ok":
                verdict = f"failed: {run.get('reason')}"
        area = study.run.__module__.rpartition(".")[0]
        lines.append(f"| `{name}` | {_cell(study.title)} | `{area}` | {_cell(verdict)} |")
    return "\n".join(lines)


def update_readme(readme: Path, runs_dir: Path, studies: dict[str, Study], preset: str = "quick") -> None:
    """Replace the block between :data:`README_START` and :data:`README_END` of ``readme`` with :func:`verdict_table`."""
    text = Path(readme).read_text(encoding="utf-8")
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        raise UserError(f"{readme} has no verdict block ({README_START} ... {README_END})")
    table = verdict_table(runs_dir, studies, preset)
    write_text(Path(readme), text[:start + len(README_START)] + "\n" + table + "\n" + text[end:])


def write_report(runs_dir: Path, studies: dict[str, Study] | None = None, wall_seconds: float | None = None
                 ) -> tuple[Path, Path]:
    """Write ``report.html`` and ``REPORT.md`` into ``runs_dir`` (studies in the given order); returns their paths.

    ``wall_seconds``: the wall time of the ``reproduce`` that made it, shown in the summary."""
    runs_dir = Path(runs_dir)
    runs = collect_runs(runs_dir, list(studies or {}), studies)
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    markdown_path, html_path = runs_dir / "REPORT.md", runs_dir / "report.html"
    write_text(markdown_path, render_markdown(runs, generated, wall_seconds))
    write_text(html_path, render_html(runs, runs_dir, generated, wall_seconds))
    return html_path, markdown_path
