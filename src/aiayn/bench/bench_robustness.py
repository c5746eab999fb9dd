"""Robustness suite: aiayn's defaults vs a plain ``nn.Transformer`` recipe on corpora of many shapes.

For each corpus of :mod:`aiayn.bench.robustness_corpora` both systems get the same wall-clock training
budget, one after the other, each in a fresh process, on an otherwise idle machine:

* aiayn exactly as a user runs it: ``aiayn train translate --train T --valid V --out DIR
  --max-minutes M`` (no preset, no option), then ``aiayn translate --model DIR`` (its default beam)
  on the test sources;
* the plain recipe of :mod:`aiayn.bench.plain_recipe` (joint byte-level BPE of 1,000 pieces, 3+3 × 512,
  Adam at a fixed 1e-4, batches of 128 pairs, greedy decoding).

Both are scored on the test split (sources never seen in training) with exact match (whitespace
collapsed), sacreBLEU BLEU (``zh`` tokenisation for Chinese targets) and chrF. Results are kept per run
in ``runs/bench/robustness/``, so a run can be repeated alone (``--only``, ``--systems``) and the table
rebuilt from all of them (``--table``).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .harness import ROOT, machine_line, write_section
from .robustness_corpora import CORPORA, Corpus

RESULTS = ROOT / "runs" / "bench" / "robustness"
SYSTEMS = ("aiayn", "plain")
_CJK = re.compile("[\u3400-\u9fff\uf900-\ufaff]")


def normalize(text: str) -> str:
    return " ".join(text.split())


def score(hypotheses: list[str], references: list[str]) -> dict[str, float]:
    import sacrebleu

    exact = sum(normalize(h) == normalize(r) for h, r in zip(hypotheses, references))
    chinese = any(_CJK.search(r) for r in references[:50])
    bleu = sacrebleu.corpus_bleu(hypotheses, [references], tokenize="zh" if chinese else "13a")
    chrf = sacrebleu.corpus_chrf(hypotheses, [references])
    return {
        "exact": 100.0 * exact / max(len(references), 1),
        "bleu": float(bleu.score),
        "chrf": float(chrf.score),
    }


def write_data(corpus: Corpus, folder: Path) -> dict[str, Path]:
    """The corpus's splits as TSV files (built once, then reused)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {split: folder / f"{split}.tsv" for split in ("train", "valid", "test")}
    if not all(p.exists() for p in paths.values()):
        splits = corpus.build()
        for split, path in paths.items():
            rows = [f"{s}\t{t}\n" for s, t in splits[split]]
            path.write_text("".join(rows), encoding="utf-8")
    return paths


def read_tsv(path: Path) -> list[tuple[str, str]]:
    rows = path.read_text(encoding="utf-8").splitlines()
    return [tuple(r.split("\t")[:2]) for r in rows if r]  # type: ignore[misc]


def aiayn_command() -> list[str]:
    return [sys.executable, "-m", "aiayn"]


def run_aiayn(paths: dict[str, Path], minutes: float, sources: list[str]) -> dict:
    out = Path(tempfile.mkdtemp(prefix="aiayn-robust-")) / "model"
    start = time.monotonic()
    train = [
        *aiayn_command(),
        "train",
        "translate",
        "--train",
        str(paths["train"]),
        "--valid",
        str(paths["valid"]),
        "--out",
        str(out),
        "--max-minutes",
        f"{minutes:g}",
    ]
    env = {**os.environ, "TQDM_DISABLE": "1"}
    done = subprocess.run(train, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"aiayn train failed:\n{done.stderr[-3000:]}")
    train_s = time.monotonic() - start
    translated = subprocess.run(
        [*aiayn_command(), "translate", "--model", str(out)],
        input="".join(s + "\n" for s in sources),
        capture_output=True,
        text=True,
        env=env,
    )
    if translated.returncode != 0:
        raise RuntimeError(f"aiayn translate failed:\n{translated.stderr[-3000:]}")
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    trained = [r for r in metrics if r.get("loss") is not None]
    plan = config.get("training", {}).get("plan") or {}
    model = config["config"]
    return {
        "system": "aiayn defaults",
        "train_seconds": round(train_s, 1),
        "plan": plan,
        "summary": (
            f"{plan.get('model_name')}, {plan.get('batch_tokens')} tok, vocab "
            + (
                f"{model['src_vocab_size']} shared"
                if plan.get("joint_vocab")
                else f"{model['src_vocab_size']}/{model['tgt_vocab_size']}"
            )
        ),
        "steps": trained[-1]["step"] if trained else 0,
        "budget_used": trained[-1]["elapsed_s"] / (60 * minutes) if trained else None,
        "kept_average": any(r.get("kept_average") for r in metrics),
        "log_tail": done.stderr[-4000:],
        "hypotheses": translated.stdout.splitlines(),
    }


def run_one(name: str, system: str, minutes: float | None, results: Path) -> dict:
    corpus = CORPORA[name]
    minutes = minutes if minutes is not None else corpus.minutes
    paths = write_data(corpus, results / "data" / name)
    test = read_tsv(paths["test"])
    sources, references = [s for s, _ in test], [t for _, t in test]
    if system == "aiayn":
        result = run_aiayn(paths, minutes, sources)
    else:
        from .plain_recipe import train_and_translate

        result = train_and_translate(read_tsv(paths["train"]), sources, minutes)
    hyps = result.pop("hypotheses")
    if len(hyps) != len(references):
        raise RuntimeError(f"{system} returned {len(hyps)} lines for {len(references)} sources")
    result.update(score(hyps, references))
    result.update(
        corpus=name,
        minutes=minutes,
        train_pairs=len(read_tsv(paths["train"])),
        test_pairs=len(test),
        samples=[[s, r, h] for (s, r), h in zip(test[:5], hyps[:5])],
    )
    return result


def _cell(runs: dict[str, dict], system: str, key: str, bold: bool = False) -> str:
    if system not in runs:
        return "—"
    text = f"{runs[system][key]:.1f}"
    return f"**{text}**" if bold else text


def table(results: Path) -> str:
    lines = [
        "Each corpus is split so that no test source is seen in training; both systems get the same "
        "wall-clock training budget, one after the other, each in its own process, on an otherwise "
        "idle machine. aiayn: `aiayn train translate --train T --valid V --max-minutes M` and "
        "`aiayn translate` with no other option. Plain recipe: `aiayn/bench/plain_recipe.py` "
        "(joint byte-level BPE 1000, `nn.Transformer` 3+3 × 512, Adam 1e-4 fixed, 128 pairs a batch, "
        "greedy). The scored metric is in bold.",
        "",
        f"Machine: {machine_line()}",
        "",
        "| corpus | train pairs | budget | metric | aiayn | plain recipe | aiayn chrF | plain chrF "
        "| aiayn's plan | plain steps |",
        "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | --- | ---: |",
    ]
    for name, corpus in CORPORA.items():
        runs = _runs(results, name)
        if not runs:
            continue
        metric = corpus.metric
        any_run = next(iter(runs.values()))
        cell = functools.partial(_cell, runs)

        ours = runs.get("aiayn", {})
        plan = f"{ours.get('summary', '')}; {ours.get('steps', '')} steps" if ours else ""
        peer_steps = runs.get("plain", {}).get("steps", "")
        lines.append(
            f"| {name}{' (rule-like)' if corpus.rule_like else ''} | {any_run['train_pairs']:,} | "
            f"{any_run['minutes']:g} min | {'exact %' if metric == 'exact' else 'BLEU'} | "
            f"{cell('aiayn', metric, True)} | {cell('plain', metric, True)} | "
            f"{cell('aiayn', 'chrf')} | {cell('plain', 'chrf')} | {plan} | {peer_steps} |"
        )
    lines += ["", summary_line(results)]
    return "\n".join(lines)


def _runs(results: Path, name: str) -> dict[str, dict]:
    """The stored results of ``name``, by system (those that ran)."""
    runs = {}
    for system in SYSTEMS:
        path = results / f"{name}.{system}.json"
        if path.exists():
            runs[system] = json.loads(path.read_text(encoding="utf-8"))
    return runs


def summary_line(results: Path) -> str:
    """How many corpora aiayn's defaults match or beat the plain recipe on, and the rule-like bar."""
    wins, both, rule_ok, rule_n = 0, 0, 0, 0
    for name, corpus in CORPORA.items():
        runs = _runs(results, name)
        if len(runs) == 2:
            both += 1
            wins += runs["aiayn"][corpus.metric] >= runs["plain"][corpus.metric]
        if corpus.rule_like and "aiayn" in runs:
            rule_n += 1
            rule_ok += runs["aiayn"]["exact"] >= 95.0
    return (
        f"aiayn's defaults are at least as good as the plain recipe on {wins} of {both} corpora; "
        f"exact match ≥ 95% on {rule_ok} of {rule_n} rule-like corpora."
    )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=sorted(CORPORA), help="these corpora")
    parser.add_argument("--systems", nargs="+", choices=SYSTEMS, default=list(SYSTEMS))
    parser.add_argument("--minutes", type=float, help="budget for every corpus (default: its own)")
    parser.add_argument("--results", default=str(RESULTS))
    parser.add_argument("--run", nargs=2, metavar=("CORPUS", "SYSTEM"), help=argparse.SUPPRESS)
    parser.add_argument("--table", action="store_true", help="only rebuild the table")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--quick", action="store_true", help="skip (hours of training)")
    args = parser.parse_args(argv)
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    if args.run:  # one run, in this fresh process
        name, system = args.run
        result = run_one(name, system, args.minutes, results)
        path = results / f"{name}.{system}.json"
        path.write_text(json.dumps(result, ensure_ascii=False, indent=1), encoding="utf-8")
        keys = ("exact", "bleu", "chrf", "steps", "train_seconds")
        print(json.dumps({"corpus": name, "system": system, **{k: result.get(k) for k in keys}}))
        return
    if args.quick:
        print("bench_robustness: skipped by --quick (it trains two models per corpus)")
        return
    failed: list[str] = []
    if not args.table:
        for name in args.only or list(CORPORA):
            for system in args.systems:
                command = [
                    sys.executable,
                    "-m",
                    "aiayn.bench.bench_robustness",
                    "--run",
                    name,
                    system,
                ]
                command += ["--results", str(results)]
                if args.minutes is not None:
                    command += ["--minutes", f"{args.minutes:g}"]
                if subprocess.run(command, cwd=ROOT).returncode != 0:
                    failed.append(f"{name} {system}")  # the other runs still count
    text = table(results)
    print(text)
    if not args.no_write:
        write_section("Robustness: aiayn's defaults on corpora of many shapes", text)
    if failed:
        sys.exit(f"bench_robustness: these runs failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
