"""Training and validation cases for learning attention-head weights on real QA (issue 24).

Converts raw HotpotQA (distractor setting) and SQuAD records into JSONL with the schema of
``../shared/data/context_qa/dev.jsonl``: ``{"id", "source": "hotpot"|"squad",
"context_passages", "query", "answer", "gold_sentences", "meta"}``, each line with a ``split``
(``"train"`` or ``"val"``) in ``meta``. The data are CC BY-SA 4.0 and are NOT committed: write the
output outside the repository (default ``/work/cache/context_train.jsonl``).

Sources (public GitHub copies of the original releases; both are TRAIN splits, so they share no
record with the dev cases, which come from HotpotQA dev and SQuAD 2.0 dev):

* HotpotQA train, distractor setting (Yang et al., EMNLP 2018): the 100 records of
  ``data/hotpotqa_train.json`` in ``OSU-NLP-Group/HippoRAG`` at commit
  ``3d95d255a8db0c1699b853cfb4fbe5056708162d`` (the file is absent from later commits; the
  repository's newest snapshot still holds that commit). Original format: ``_id, question,
  answer, supporting_facts [[title, sent_id]], context [[title, [sentences]]], type, level``.
* SQuAD 2.0 train (Rajpurkar et al., ACL 2018): ``train-v2.0.json`` in
  ``PhongNTDo/guide_train_MRC_transformers`` at commit
  ``f626fe886397c8c6b71fdb453707a1522b5c52dd`` (blob ``62cb4b9d…``): the first 10 articles of
  the official train file (Beyoncé … Solar_energy), 694 paragraphs.

Rebuild (the raw files from the fetched bare git directories, or from
``https://raw.githubusercontent.com/<repo>/<commit>/<file>``)::

    git -C /work/.mirror/OSU-NLP-Group+HippoRAG/repo show \\
        3d95d255a8db0c1699b853cfb4fbe5056708162d:data/hotpotqa_train.json > /tmp/hotpot_train.json
    git -C /work/.mirror/PhongNTDo+guide_train_MRC_transformers/repo show \\
        f626fe886397c8c6b71fdb453707a1522b5c52dd:train-v2.0.json > /tmp/squad_train.json
    # all 280 cases (100 HotpotQA: 70 train + 30 val; 150 + 30 SQuAD)
    .venv/bin/python scripts/context_train_data.py --hotpot /tmp/hotpot_train.json \\
        --squad /tmp/squad_train.json --out /work/cache/context_train.jsonl
    # exactly the cases the shipped smollm2 heads were fit and validated on
    .venv/bin/python scripts/context_train_data.py --hotpot /tmp/hotpot_train.json \\
        --squad /tmp/squad_train.json --only-ids src/attribkit/data/heads/smollm2.json \\
        --out /work/cache/context_train_used.jsonl

Conversion:

* HotpotQA: each of the question's paragraphs is one passage (its sentences joined as given,
  title dropped). Both gold paragraphs are always kept; distractors are added in a seeded order
  while the prompt (chat-formatted, with the answer) stays within ``--max-tokens`` SmolLM2
  tokens (default 700: about 5 paragraphs and 19 sentences; 1,200 tokens made the
  leave-one-out targets cost ~70 s per case on the shared CPU); paragraph order is the record's order. Gold = the
  supporting-fact sentences. Records whose gold sentences or answer cannot be kept are dropped
  (yes/no answers are kept: the answer need not occur in the context).
* SQuAD: answerable questions only; one question per paragraph (seeded choice); the paragraph is
  the single passage; gold = the sentence (attribkit's offline splitter) holding the first
  answer span.
* Any record whose question text occurs in ``--dev`` (default
  ``../shared/data/context_qa/dev.jsonl``, when that file exists) is DROPPED.
* ``--only-ids``: keep only the listed cases (the split is assigned first, so it is unchanged);
  with the shipped heads file (``--only-ids src/attribkit/data/heads/smollm2.json``) this
  rebuilds exactly the cases the shipped weights were fit and validated on.
* Split: HotpotQA records are split by a seeded shuffle (``--hotpot-val`` to validation, the rest
  to training); SQuAD by article (``--squad-val-articles`` to validation) so that validation
  paragraphs share no article with training ones; ``--squad-train`` / ``--squad-val`` cap the
  counts (seeded).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections import Counter
from pathlib import Path
from typing import Any

HOTPOT_SOURCE = {
    "repo": "OSU-NLP-Group/HippoRAG",
    "commit": "3d95d255a8db0c1699b853cfb4fbe5056708162d",
    "file": "data/hotpotqa_train.json",
    "dataset": "HotpotQA train, distractor setting (CC BY-SA 4.0)",
}
SQUAD_SOURCE = {
    "repo": "PhongNTDo/guide_train_MRC_transformers",
    "commit": "f626fe886397c8c6b71fdb453707a1522b5c52dd",
    "file": "train-v2.0.json",
    "dataset": "SQuAD 2.0 train, first 10 articles (CC BY-SA 4.0)",
}
DEFAULT_DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "context_qa" / "dev.jsonl"
DEFAULT_VAL_ARTICLES = "New_York_City,Solar_energy"


def _norm(question: str) -> str:
    return " ".join(question.split()).lower()


def dev_questions(path: Path) -> set[str]:
    """Normalised question texts of the evaluation cases (empty when the file is absent)."""
    if not path.is_file():
        return set()
    lines = path.read_text(encoding="utf-8").splitlines()
    return {_norm(json.loads(line)["query"]) for line in lines if line.strip()}


class PromptLength:
    """SmolLM2 token count of the chat prompt a ContextTask would build (tokenizer only)."""

    def __init__(self, model: str = "smollm2") -> None:
        import attribkit

        self.lm = attribkit.load(model)

    def __call__(self, passages: list[str], query: str, answer: str) -> int:
        from attribkit.tasks.context import PROMPT_TEMPLATE

        prompt = PROMPT_TEMPLATE.format(context="\n\n".join(passages), query=query)
        answer_ids = self.lm.tokenizer(answer, add_special_tokens=False)["input_ids"]
        return len(self.lm.prompt_token_spans(prompt)) + len(answer_ids)


def read_ids(path: Path) -> set[str]:
    """Case ids from a text file (one a line) or a heads file (``selection.case_ids``)."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        ids = json.loads(text)["selection"]["case_ids"]
        return {i for split in ids.values() for i in split}
    return {line.strip() for line in text.splitlines() if line.strip()}


def convert_hotpot(
    records: list[dict[str, Any]], max_tokens: int, length: Any, seed: int
) -> list[dict[str, Any]]:
    out = []
    for rec in records:
        titles = [t for t, _ in rec["context"]]
        paragraphs = {t: [str(s) for s in sents] for t, sents in rec["context"]}
        gold = [(t, int(i)) for t, i in rec["supporting_facts"]]
        gold_titles = sorted({t for t, _ in gold}, key=titles.index) if gold else []
        if not gold or any(t not in paragraphs or i >= len(paragraphs[t]) for t, i in gold):
            continue
        rng = random.Random(f"{seed}:{rec['_id']}")
        distractors = [t for t in titles if t not in gold_titles]
        rng.shuffle(distractors)
        kept = set(gold_titles)

        def passages(
            keep: set[str], titles: list[str] = titles, paragraphs: dict = paragraphs
        ) -> list[str]:
            return ["".join(paragraphs[t]).strip() for t in titles if t in keep]

        if length(passages(kept), rec["question"], rec["answer"]) > max_tokens:
            continue
        for t in distractors:
            if length(passages(kept | {t}), rec["question"], rec["answer"]) <= max_tokens:
                kept.add(t)
        ps = passages(kept)
        gold_sentences = [paragraphs[t][i].strip() for t, i in gold]
        if not all(any(g in p for p in ps) for g in gold_sentences):
            continue
        out.append(
            {
                "id": f"hotpot-train-{rec['_id']}",
                "source": "hotpot",
                "context_passages": ps,
                "query": rec["question"],
                "answer": rec["answer"],
                "gold_sentences": gold_sentences,
                "meta": {
                    "hotpot_id": rec["_id"],
                    "type": rec.get("type"),
                    "level": rec.get("level"),
                    "titles": [t for t in titles if t in kept],
                    "gold_titles": gold_titles,
                    "n_paragraphs_kept": len(ps),
                    "tokens": length(ps, rec["question"], rec["answer"]),
                    "origin": HOTPOT_SOURCE,
                },
            }
        )
    return out


def convert_squad(data: dict[str, Any], seed: int) -> list[dict[str, Any]]:
    from attribkit.tasks.context import context_units

    out = []
    for article in data["data"]:
        for p_index, para in enumerate(article["paragraphs"]):
            qas = [q for q in para["qas"] if not q.get("is_impossible") and q.get("answers")]
            if not qas:
                continue
            rng = random.Random(f"{seed}:{article['title']}:{p_index}")
            qa = rng.choice(qas)
            context = para["context"]
            ans = qa["answers"][0]
            start, text = int(ans["answer_start"]), ans["text"]
            if context[start : start + len(text)] != text:
                continue
            units = context_units(context)
            offset = units.text.find(context)
            if offset < 0:
                continue
            a0, a1 = start + offset, start + offset + len(text)
            hits = [units.text[u.start : u.end] for u in units if u.start < a1 and u.end > a0]
            if not hits:
                continue
            out.append(
                {
                    "id": f"squad-train-{qa['id']}",
                    "source": "squad",
                    "context_passages": [context],
                    "query": qa["question"],
                    "answer": text,
                    "gold_sentences": [hits[0]],
                    "meta": {
                        "article": article["title"],
                        "paragraph": p_index,
                        "answer_start": start,
                        "n_sentences": len(units),
                        "origin": SQUAD_SOURCE,
                    },
                }
            )
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hotpot", type=Path, required=True, help="HotpotQA train JSON (raw)")
    ap.add_argument("--squad", type=Path, required=True, help="SQuAD train JSON (raw)")
    ap.add_argument("--out", type=Path, default=Path("/work/cache/context_train.jsonl"))
    ap.add_argument("--dev", type=Path, default=DEFAULT_DEV, help="cases whose questions to drop")
    ap.add_argument("--max-tokens", type=int, default=700)
    ap.add_argument("--hotpot-val", type=int, default=30)
    ap.add_argument("--squad-train", type=int, default=150)
    ap.add_argument("--squad-val", type=int, default=30)
    ap.add_argument("--squad-val-articles", default=DEFAULT_VAL_ARTICLES)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", default="smollm2", help="tokenizer for --max-tokens")
    ap.add_argument(
        "--only-ids",
        type=Path,
        default=None,
        help="keep only these case ids (after the split is assigned): a text file of ids, one a "
        "line, or a heads file whose selection.case_ids lists them (the cases it was fit on)",
    )
    args = ap.parse_args(argv)

    if Path(args.out).resolve().is_relative_to(Path(__file__).resolve().parents[1]):
        raise SystemExit("write the converted data outside the repository (CC BY-SA 4.0)")
    banned = dev_questions(args.dev)
    length = PromptLength(args.model)

    hotpot_raw = json.loads(args.hotpot.read_text(encoding="utf-8"))
    hotpot = convert_hotpot(hotpot_raw, args.max_tokens, length, args.seed)
    squad = convert_squad(json.loads(args.squad.read_text(encoding="utf-8")), args.seed)
    dropped = Counter()
    kept_h, kept_s = [], []
    for rows, kept in ((hotpot, kept_h), (squad, kept_s)):
        for r in rows:
            if _norm(r["query"]) in banned:
                dropped[r["source"]] += 1
            else:
                kept.append(r)

    rng = random.Random(args.seed)
    rng.shuffle(kept_h)
    for i, r in enumerate(kept_h):
        r["meta"]["split"] = "val" if i < args.hotpot_val else "train"
    val_articles = {a for a in args.squad_val_articles.split(",") if a}
    s_val = [r for r in kept_s if r["meta"]["article"] in val_articles]
    s_train = [r for r in kept_s if r["meta"]["article"] not in val_articles]
    rng.shuffle(s_val)
    rng.shuffle(s_train)
    s_val, s_train = s_val[: args.squad_val], s_train[: args.squad_train]
    for split, rows in (("val", s_val), ("train", s_train)):
        for r in rows:
            r["meta"]["split"] = split
    rows = kept_h + s_train + s_val
    if args.only_ids is not None:
        wanted = read_ids(args.only_ids)
        rows = [r for r in rows if r["id"] in wanted]
        missing = wanted - {r["id"] for r in rows}
        if missing:
            raise SystemExit(
                f"{len(missing)} ids of {args.only_ids} not produced: {sorted(missing)[:3]}"
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    counts = Counter((r["source"], r["meta"]["split"]) for r in rows)
    print(
        f"wrote {len(rows)} cases to {args.out}: {dict(sorted(counts.items()))}; "
        f"converted hotpot {len(hotpot)}/{len(hotpot_raw)}, squad {len(squad)}; "
        f"dropped as dev questions: {dict(dropped)} (dev file: "
        f"{args.dev if banned else 'absent'})",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
