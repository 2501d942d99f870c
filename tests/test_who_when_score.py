"""Who&When scoring: exact and official (reproducing ``Automated_FA/evaluate.py`` exactly, run as
a subprocess on the same prediction file), the official text format, bootstrap intervals, MRR
from turn rankings, and the trivial baselines. Gold logs here are hand-written."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import attribkit as ak
from attribkit.evaluation.who_when import (
    WhoWhenScore,
    baseline_predictions,
    cross_fitted_majority,
    parse_predictions,
    read_predictions,
    who_when_score,
    write_predictions,
)
from attribkit.tasks.agents import AgentLog, AgentTask

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "who_and_when"
EVALUATE = SHARED / "Automated_FA" / "evaluate.py"

AGENTS = ["Planner", "Coder", "Computer_terminal", "Verifier"]


def gold_file(i: int, agent: str, step: int, n: int = 14) -> dict[str, Any]:
    """A hand-written Algorithm-Generated-style log of ``n`` turns cycling through AGENTS, with
    ``agent`` speaking at ``step``."""
    names = [AGENTS[k % len(AGENTS)] for k in range(n)]
    names[step] = agent
    return {
        "question": f"toy question {i}",
        "ground_truth": str(i),
        "history": [
            {"content": f"turn {k} of toy log {i}", "role": "user", "name": a}
            for k, a in enumerate(names)
        ],
        "mistake_agent": agent,
        "mistake_step": str(step),
    }


# (gold agent, gold step, prediction): the official rule's quirks and an unparsed prediction
CASES: list[tuple[str, int, Any]] = [
    ("Planner", 1, {"agent": "Planner", "step": 12}),  # step "1" in "12": official only
    ("Coder", 2, {"agent": "Coder_Expert", "step": 2}),  # "Coder" in "Coder_Expert": official
    ("Verifier", 3, None),  # unparsed
    ("Coder", 0, {"agent": "Planner", "step": 0}),  # step right, agent wrong
    ("Planner", 4, {"agent": "Planner", "step": 4}),  # both right
    ("Coder", 5, {"agent": "Coder", "step": None}),  # no step: unparsed for evaluate.py
    ("Verifier", 7, {"agent": "Verifier (thought)", "step": 6}),  # official parses "Verifier"
    ("Planner", 8, {"agent": "Web Surfer", "step": 9}),  # official parses "Web"
    ("Coder", 10, {"agent": "Coder", "step": "10", "reason": "Prediction for 3.json: x"}),
]


@pytest.fixture
def gold_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "gold"
    folder.mkdir()
    for i, (agent, step, _) in enumerate(CASES):
        (folder / f"{i + 1}.json").write_text(json.dumps(gold_file(i, agent, step)))
    return folder


def run_evaluate(data_path: Path, eval_file: Path) -> dict[str, float]:
    """evaluate.py's printed accuracies and counts."""
    if not EVALUATE.is_file():
        pytest.skip(f"the official Who&When scorer is absent ({EVALUATE})")
    out = subprocess.run(
        [
            sys.executable,
            str(EVALUATE),
            "--data_path",
            str(data_path),
            "--eval_file",
            str(eval_file),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    found = {
        "agent": re.search(r"Agent Accuracy:\s*([\d.]+)%", out),
        "step": re.search(r"Step Accuracy:\s*([\d.]+)%", out),
        "agent_n": re.search(r"Correct Agent Predictions:\s*(\d+)", out),
        "step_n": re.search(r"Correct Step Predictions:\s*(\d+)", out),
        "parsed": re.search(r"Successfully parsed predictions for (\d+) files", out),
    }
    assert all(found.values()), "evaluate.py printed an unexpected report"
    return {k: float(m.group(1)) for k, m in found.items()}  # type: ignore[union-attr]


def test_official_scoring_reproduces_evaluate_py(gold_dir: Path, tmp_path: Path) -> None:
    logs = AgentLog.from_dir(gold_dir)
    preds = [p for _, _, p in CASES]
    path = write_predictions(preds, logs, tmp_path / "predictions.txt")
    official = run_evaluate(gold_dir, path)
    score = who_when_score(preds, logs, scoring="official")
    assert score.metrics["agent"]["correct"] == official["agent_n"]
    assert score.metrics["step"]["correct"] == official["step_n"]
    assert round(100 * score.agent_accuracy, 2) == official["agent"]
    assert round(100 * score.step_accuracy, 2) == official["step"]
    assert score.unparsed == len(logs) - official["parsed"] == 2
    # the rows pin each quirk: case 1 step "1" matches "12", case 8 "Web" is not "Planner"
    rows = score.rows
    assert rows[0]["step"] == 1 and rows[1]["agent"] == 1 and rows[6]["agent"] == 1
    assert rows[2] == {"id": "3.json", "agent": 0, "step": 0, "joint": 0}
    assert rows[5]["agent"] == 0  # an agent without a step is unparsed for evaluate.py


def test_exact_scoring_differs_on_the_same_case(gold_dir: Path) -> None:
    logs = AgentLog.from_dir(gold_dir)
    preds = [p for _, _, p in CASES]
    exact = who_when_score(preds, logs)
    official = who_when_score(preds, logs, scoring="official")
    assert exact.metrics["agent"]["correct"] == 4  # cases 1, 5, 6 (agent without step), 9
    assert exact.metrics["step"]["correct"] == 4  # cases 2, 4, 5, 9
    assert exact.metrics["joint"]["correct"] == 2  # cases 5, 9
    assert official.metrics["agent"]["correct"] == 5  # cases 1, 2, 5, 7, 9
    assert official.metrics["step"]["correct"] == 5  # cases 1 ("1" in "12"), 2, 4, 5, 9
    assert exact.unparsed == 2 and exact.n == len(CASES)
    assert exact.metrics["step_within_1"]["correct"] == 6  # + cases 7 and 8
    assert exact.metrics["step_within_5"]["correct"] == 6
    assert exact.mrr is None and "step_within_1" not in official.metrics
    with pytest.raises(ak.InputError, match="one prediction"):
        who_when_score(preds[:-1], logs)
    with pytest.raises(ak.InputError, match="scoring must be one of"):
        who_when_score(preds, logs, scoring="lenient")


def test_prediction_file_round_trip(gold_dir: Path, tmp_path: Path) -> None:
    logs = AgentLog.from_dir(gold_dir)
    preds = [p for _, _, p in CASES]
    text = write_predictions(preds, logs, tmp_path / "p.txt").read_text()
    assert text.startswith("Prediction for 1.json:\nAgent Name: Planner\nStep Number: 12\n")
    assert "Prediction for 3.json:\nFailed to get prediction.\n\n" in text
    assert "prediction for 3.json: x" in text  # a reason cannot open a block
    assert len(parse_predictions(text)) == len(CASES) - 2
    back = read_predictions(tmp_path / "p.txt", logs)
    assert back[0] == {"agent": "Planner", "step": 12} and back[2] is None and back[5] is None
    assert back[6] == {"agent": "Verifier", "step": 6}
    assert (
        who_when_score(back, logs, scoring="official").to_dict()["metrics"]
        == who_when_score(preds, logs, scoring="official").to_dict()["metrics"]
    )


def test_bootstrap_intervals_contain_the_mean(gold_dir: Path) -> None:
    logs = AgentLog.from_dir(gold_dir)
    preds = [p for _, _, p in CASES]
    for scoring in ("exact", "official"):
        score = who_when_score(preds, logs, scoring=scoring, n_boot=400, seed=3)
        for m in score.metrics.values():
            assert m["lo"] <= m["mean"] <= m["hi"]
        assert score.metrics["agent"]["lo"] < score.metrics["agent"]["hi"]
        assert who_when_score(preds, logs, scoring=scoring, n_boot=400, seed=3).to_dict() == (
            score.to_dict()
        )
    assert isinstance(score, WhoWhenScore)
    assert "agent" in score.table() and "unparsed" in str(score)
    json.dumps(score.to_dict())


def test_mrr_from_turn_rankings(gold_dir: Path) -> None:
    logs = AgentLog.from_dir(gold_dir)[:3]  # gold steps 1, 2, 3
    preds: list[Any] = []
    for log, second in zip(logs, (True, False, True), strict=True):
        task = AgentTask(log, outcome="gold")
        scores = np.linspace(1.0, 0.0, len(task.units))  # ranks step 0 first, then 1, 2...
        if not second:
            scores[log.mistake_step] = 5.0  # ranks the gold step first
        preds.append(task.result(scores, "manual", {}, ak.Cost()))
    score = who_when_score(preds, logs)
    # gold 1 at rank 2, gold 2 at rank 1, gold 3 at rank 4
    assert score.mrr == pytest.approx((1 / 2 + 1 + 1 / 4) / 3)
    assert score.metrics["step"]["correct"] == 1
    assert score.metrics["agent"]["correct"] == 2  # step 0's agent is log 1's gold agent
    single = who_when_score([{"agent": "x", "step": 1, "ranking": [1, 0]}, None, None], logs)
    assert single.mrr == pytest.approx(1 / 3)


def toy_log(i: int, gold: str, names: list[str]) -> AgentLog:
    return AgentLog(
        [{"agent": a, "content": f"turn {k}"} for k, a in enumerate(names)],
        mistake_agent=gold,
        mistake_step=names.index(gold),
        meta={"id": f"{i}.json"},
    )


def test_baselines_are_deterministic_and_follow_their_rules() -> None:
    names = ["Lead", "Coder", "Computer_terminal", "Coder", "Computer_terminal", "Lead"]
    logs = [toy_log(i, "Coder" if i % 3 else "Lead", names) for i in range(12)]
    a = baseline_predictions(logs, "random", seed=5)
    assert a == baseline_predictions(logs, "random", seed=5)
    assert a != baseline_predictions(logs, "random", seed=6)
    assert all(p["agent"] in names and 0 <= p["step"] < len(names) for p in a)
    most = baseline_predictions(logs, "most_turns")
    # Lead, Coder and the terminal speak twice each; the last speaker (Lead) is not counted
    assert most[0]["agent"] == "Coder" and most[0]["step"] == 1
    no_term = baseline_predictions(logs, "most_turns_no_terminal")
    assert no_term[0] == {**no_term[0], "agent": "Lead", "step": 0}
    assert baseline_predictions(logs, "first_turn")[0] == {
        "agent": "Lead",
        "step": 0,
        "reason": "first turn",
    }
    maj = baseline_predictions(logs, "majority", train=logs[:6])
    assert {p["agent"] for p in maj} == {"Coder"} and {p["step"] for p in maj} == {1}
    absent = baseline_predictions(
        [toy_log(0, "Lead", ["Lead", "Verifier", "Verifier", "Lead"])], "majority", train=logs
    )
    assert absent[0]["agent"] == "Verifier" and "absent" in absent[0]["reason"]
    with pytest.raises(ak.InputError, match="needs train="):
        baseline_predictions(logs, "majority")
    with pytest.raises(ak.InputError, match="unknown baseline rule"):
        baseline_predictions(logs, "oracle")
    s = who_when_score(maj, logs)
    assert s.metrics["agent"]["correct"] == sum(1 for i in range(12) if i % 3)


def test_majority_step_guesses_the_commonest_gold_step_and_its_speaker() -> None:
    names = ["Lead", "Coder", "Verifier", "Coder", "Lead"]
    # gold steps in train: 1 (Coder) ×3, 2 (Verifier) ×3, 0 (Lead) ×1: a tie, the smaller wins
    train = [toy_log(i, "Coder", names) for i in range(3)]
    train += [toy_log(3 + i, "Verifier", names) for i in range(3)] + [toy_log(6, "Lead", names)]
    short = AgentLog([{"agent": "Lead", "content": "a"}, {"agent": "Coder", "content": "b"}])
    other = AgentLog([{"agent": a, "content": "x"} for a in ("Lead", "Verifier", "Coder")])
    got = baseline_predictions([other, short], "majority_step", train=train)
    assert [(p["agent"], p["step"]) for p in got] == [("Verifier", 1), ("Coder", 1)]
    one = AgentLog([{"agent": "Lead", "content": "a"}])
    assert baseline_predictions([one], "majority_step", train=train)[0]["step"] == 0  # clipped
    with pytest.raises(ak.InputError, match="needs train="):
        baseline_predictions([other], "majority_step")
    # out of fold: 9 logs blame step 1 and 1 log step 2; every fold still guesses step 1
    logs = [toy_log(i, "Coder", names) for i in range(9)] + [toy_log(9, "Verifier", names)]
    preds = cross_fitted_majority(logs, folds=5, rule="majority_step")
    assert [p["step"] for p in preds] == [1] * 10
    assert who_when_score(preds, logs).metrics["step"]["correct"] == 9
    with pytest.raises(ak.InputError, match="'majority' or 'majority_step'"):
        cross_fitted_majority(logs, rule="random")
    rows = ak.trivial_baselines(logs, ("random", "majority", "majority_step"))
    assert list(rows) == ["random", "majority (5-fold)", "majority step (5-fold)"]
    assert rows["majority step (5-fold)"] == preds
    assert list(ak.trivial_baselines(logs[:4], ("random", "majority_step"))) == ["random"]


def test_cross_fitted_majority_never_sees_its_own_label() -> None:
    names = ["Lead", "Coder", "Verifier", "Coder"]
    logs = [toy_log(i, "Coder", names) for i in range(9)] + [toy_log(9, "Verifier", names)]
    preds = cross_fitted_majority(logs, folds=5, seed=0)
    assert len(preds) == 10 and all(p["agent"] == "Coder" for p in preds)
    assert preds == cross_fitted_majority(logs, folds=5, seed=0)
    # two labels tied 5/5: each fold's prediction is the other folds' majority
    even = [toy_log(i, "Coder" if i < 5 else "Verifier", names) for i in range(10)]
    for p, log in zip(cross_fitted_majority(even, folds=10), even, strict=True):
        assert p["agent"] != log.mistake_agent  # out of fold, the other label has 5 votes to 4
    with pytest.raises(ak.InputError, match="folds must be between 2"):
        cross_fitted_majority(logs, folds=1)


def test_official_scoring_on_the_shared_logs_matches_evaluate_py(tmp_path: Path) -> None:
    """The most-turns baseline on each shared family, scored here and by evaluate.py (only
    counts are compared; nothing of the logs is printed)."""
    families = sorted(p for p in (SHARED / "Who&When").glob("*") if p.is_dir())
    if not families or not EVALUATE.is_file():
        pytest.skip(f"the shared Who&When logs or scorer are absent ({SHARED})")
    for folder in families:
        logs = AgentLog.from_dir(folder)
        preds = baseline_predictions(logs, "most_turns")
        preds[0] = None  # one unparsed prediction
        path = write_predictions(preds, logs, tmp_path / f"{folder.name}.txt")
        official = run_evaluate(folder, path)
        score = who_when_score(preds, logs, scoring="official", n_boot=10)
        assert score.metrics["agent"]["correct"] == official["agent_n"]
        assert score.metrics["step"]["correct"] == official["step_n"]
        assert round(100 * score.step_accuracy, 2) == official["step"]
