"""Multi-agent logs: ``agents``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from attribkit.cli._app import app, attribution_json, console, err_console, exit_with, progress_bar
from attribkit.core.jsonio import to_json

if TYPE_CHECKING:
    from attribkit.core.attribution import Attribution


def agents_json(attribution: Attribution, log: object) -> dict[str, object]:
    """The one JSON object ``attribkit agents LOG --json`` prints: the shared fields, the
    ``decision`` ({agent, step, reason}), ``agent_scores``, the log's ``id`` and its gold
    ``mistake_agent``/``mistake_step`` when known, and how the turns were cut (``truncation``,
    null when whole). No log text beyond the turn labels."""
    return {
        "id": getattr(log, "id", None),
        **attribution_json(attribution),
        "decision": to_json(attribution.extras.get("decision")),
        "agent_scores": to_json(attribution.extras.get("agent_scores")),
        "truncation": to_json((attribution.target or {}).get("truncation")),
        "gold": {
            "agent": getattr(log, "mistake_agent", None),
            "step": getattr(log, "mistake_step", None),
        },
    }


@app.command("agents")
def agents_command(
    path: Path = typer.Argument(
        ...,
        help="A Who&When log (JSON), a JSON list of turns, or with --evaluate a folder of logs.",
    ),
    method: str | None = typer.Option(
        None, "--method", help="Agents or perturbation method (default turn_loo)."
    ),
    model: str = typer.Option(
        "smollm2", "--model", help="Model name or local path (the reader, and the local judge)."
    ),
    dtype: str | None = typer.Option(
        None,
        "--dtype",
        help="The model's weights and activations: float32 (default) or bfloat16 (about 3x "
        "faster on CPUs with AMX, e.g. Xeon Sapphire Rapids; see benchmarks/README.md).",
    ),
    judge_url: str | None = typer.Option(
        None, "--judge-url", help="OpenAI-compatible chat endpoint for judge methods."
    ),
    judge_model: str | None = typer.Option(None, "--judge-model", help="Model name at the URL."),
    judge_key_env: str | None = typer.Option(
        None, "--judge-key-env", help="NAME of the environment variable holding the API key."
    ),
    with_answer: bool = typer.Option(
        False, "--with-answer", help="Give judges the correct answer (Who&When's with-GT setting)."
    ),
    outcome: str = typer.Option(
        "final", "--outcome", help="What judge-free methods score: final (last turn) or gold."
    ),
    max_turn_chars: int | None = typer.Option(
        None, "--max-turn-chars", help="Cut every turn to N characters (logs over the window)."
    ),
    max_tokens: str | None = typer.Option(
        None,
        "--max-tokens",
        help="Cut the turns of a log over N tokens (or 'window': the model's) to the longest "
        "common length that fits; bounds the ablation methods' time.",
    ),
    evaluate: bool = typer.Option(
        False, "--evaluate", help="PATH is a folder: score every log against its gold labels."
    ),
    predictions: Path | None = typer.Option(
        None, "--predictions", help="With --evaluate: write Who&When's prediction file here."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print exactly one JSON object."),
) -> None:
    """Which agent, at which step, caused a multi-agent failure (Who&When, A2P, ablations)?

    Prints ids, steps, agents and scores only, never the logs' text."""
    import json

    from attribkit.core.errors import AttribkitError, InputError
    from attribkit.evaluation.who_when import (
        trivial_baselines,
        who_when_score,
        write_predictions,
    )
    from attribkit.models import ChatJudge, LocalJudge, load
    from attribkit.tasks.agents import DEFAULT_METHOD, AgentLog, AgentTask
    from attribkit.viz.console import print_attribution

    method = method or DEFAULT_METHOD
    if (judge_url is None) != (judge_model is None):
        raise exit_with(InputError("--judge-url and --judge-model go together"))
    budget = int(max_tokens) if max_tokens is not None and max_tokens.isdigit() else max_tokens
    if budget not in (None, "window") and not isinstance(budget, int):
        raise exit_with(InputError("--max-tokens takes a number of tokens or 'window'"))
    try:
        if evaluate:
            if not path.is_dir():
                raise InputError(f"--evaluate needs a folder of logs, got {path}")
            logs = AgentLog.from_dir(path)
            if not logs:
                raise InputError(f"no .json log in {path}")
        else:
            if path.is_dir():
                raise InputError(f"{path} is a folder: pass one log, or add --evaluate")
            logs = [AgentLog.from_file(path)]
        with progress_bar(err_console) as progress:
            step = progress.add_task(f"Loading model {model}", total=None)
            lm = load(model, dtype=dtype)
            progress.update(step, total=1, completed=1)
            judge = (
                ChatJudge(judge_url, judge_model, api_key_env=judge_key_env)
                if judge_url is not None and judge_model is not None
                else LocalJudge(lm)
            )
            results: list[Attribution | None] = []
            failures: list[str] = []
            step = progress.add_task(f"Attributing ({method})", total=len(logs))
            for log in logs:
                try:
                    task = AgentTask(
                        log,
                        lm=lm,
                        judge=judge,
                        outcome=outcome,
                        with_answer=with_answer,
                        max_turn_chars=max_turn_chars,
                        max_tokens=budget,
                    )
                    results.append(task.attribute(method))
                except InputError as e:
                    if not evaluate:
                        raise
                    results.append(None)  # counted unparsed, as the official scorer would
                    failures.append(f"{log.id}: {e}")
                progress.advance(step)
    except AttribkitError as e:
        raise exit_with(e) from None

    if not evaluate:
        attribution, log = results[0], logs[0]
        assert attribution is not None
        if as_json:
            typer.echo(json.dumps(agents_json(attribution, log), ensure_ascii=False))
            return
        decision = attribution.extras.get("decision") or {}
        console.print(
            f"[bold]Decision:[/bold] agent {decision.get('agent')!s}, step "
            f"{decision.get('step')!s} ({attribution.method})",
            highlight=False,
        )
        if log.mistake_agent is not None:
            console.print(
                f"[bold]Gold:[/bold] agent {log.mistake_agent}, step {log.mistake_step}",
                highlight=False,
            )
        print_attribution(attribution, console=console)
        totals = attribution.extras.get("agent_scores") or {}
        for agent, value in sorted(totals.items(), key=lambda kv: -kv[1]):
            console.print(f"  {agent}: {value:+.4f}", highlight=False)
        return

    if predictions is not None:
        write_predictions(results, logs, predictions)
    rules = ("random", "most_turns", "majority", "majority_step")
    rows = {method: results, **trivial_baselines(logs, rules)}
    report: dict[str, object] = {"logs": len(logs), "method": method, "failed": failures}
    for name, preds in rows.items():
        exact = who_when_score(preds, logs)
        official = who_when_score(preds, logs, scoring="official")
        report[name] = {"exact": exact.to_dict(), "official": official.to_dict()}
    if as_json:
        for name in rows:  # per-log rows carry ids only; keep the summary short
            for scoring in ("exact", "official"):
                entry = report.get(name)
                if isinstance(entry, dict):
                    entry[scoring].pop("rows", None)
        typer.echo(json.dumps(to_json(report), ensure_ascii=False))
        return
    console.print(f"{len(logs)} logs, method {method}; {len(failures)} failed (counted wrong)")
    for name in rows:
        entry = report.get(name)
        if not isinstance(entry, dict):
            continue
        e, o = entry["exact"]["metrics"], entry["official"]["metrics"]
        console.print(
            f"  {name:>22}: agent {100 * e['agent']['mean']:5.1f} % step "
            f"{100 * e['step']['mean']:5.1f} % (exact); agent {100 * o['agent']['mean']:5.1f} % "
            f"step {100 * o['step']['mean']:5.1f} % (official)",
            highlight=False,
        )
    for failure in failures:
        console.print(f"  failed {failure}", highlight=False)
    if predictions is not None:
        console.print(f"predictions written to [bold]{predictions}[/bold]")
