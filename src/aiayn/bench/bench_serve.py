"""``aiayn serve`` under load: dynamic batching vs one request at a time, on loopback.

A small zh-en model (the ``demo`` preset, trained briefly on ``builtin:zh-en`` once and kept under
``runs/bench/``) is served by ``aiayn serve`` in its own process, once with dynamic batching
(``--max-batch 32 --batch-wait-ms 5``, the defaults) and once one at a time (``--max-batch 1``).
64 concurrent clients (threads, one kept-alive connection each) send held-out test sentences to
``POST /v1/translate``, each until it has sent its share of requests or the time is up, so a run
always ends by itself. Reported: requests/s over the whole run, p50 and p99 latency of the answered
requests, and whether both servers gave every sentence the same translation (batching must not
change a reply).

The client threads share the machine with the server: on a machine with few cores the figures
are a lower bound for both modes alike, and only meaningful when nothing else runs.

Run: ``python -m aiayn.bench.bench_serve`` (``--quick``: a shorter model and run; ``--no-write``:
print only).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .harness import ROOT, machine_line, write_section

SECTION = "Serving: dynamic batching under load"

CLIENTS = 64
#: --quick or not -> (requests per client, seconds a run lasts at most)
RUNS = {True: (8, 25.0), False: (40, 60.0)}
MODES = {
    "batched": ["--max-batch", "32", "--batch-wait-ms", "5"],
    "one at a time": ["--max-batch", "1"],
}


def trained_model(quick: bool) -> Path:
    """The served model's directory: trained once (a minute or two on a CPU), then reused."""
    from aiayn.tasks.translation import train_translation

    steps, name = (150, "serve-zh-en-quick") if quick else (400, "serve-zh-en")
    directory = ROOT / "runs" / "bench" / name
    if not (directory / "model.safetensors").exists():
        train_translation(
            "builtin:zh-en", directory, preset="demo", max_steps=steps, progress=False
        )
    return directory


def test_sentences() -> list[str]:
    from aiayn.tasks.translation import load_pairs

    return [source for source, _ in load_pairs("builtin:zh-en", "test")]


class ServerProcess:
    """``aiayn serve`` in a child process on a free loopback port; its log goes to a file (a pipe
    nobody reads would fill up and stall the server)."""

    def __init__(self, model: Path, beam: int, extra: list[str]) -> None:
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115 (closed in stop())
            "w+", prefix="aiayn-bench-serve-", suffix=".log"
        )
        cmd = [sys.executable, "-m", "aiayn", "serve", "--model", str(model), "--port", "0"]
        cmd += ["--beam", str(beam), *extra]
        self.proc = subprocess.Popen(cmd, stderr=self.log, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and self.proc.poll() is None:
            text = Path(self.log.name).read_text()
            if " at http://" in text:
                url = text.split(" at http://", 1)[1].split()[0].rstrip("/")
                host, port = url.rsplit(":", 1)
                self.address = (host, int(port))
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"aiayn serve did not start:\n{Path(self.log.name).read_text()[-2000:]}")

    def stop(self) -> int:
        """SIGTERM, as an operator would; its exit code (0: a clean stop)."""
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            code = self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.log.close()
        return code


@dataclass
class ClientResults:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    replies: dict[str, str] = field(default_factory=dict)


def _client(
    address: tuple[str, int],
    sentences: list[str],
    offset: int,
    count: int,
    deadline: float,
    start: threading.Barrier,
    out: ClientResults,
) -> None:
    conn = http.client.HTTPConnection(*address, timeout=120)
    start.wait()
    for i in range(count):
        if time.monotonic() >= deadline:
            break
        text = sentences[(offset + i) % len(sentences)]
        body = json.dumps({"text": text}).encode()
        began = time.perf_counter()
        try:
            conn.request("POST", "/v1/translate", body, {"Content-Type": "application/json"})
            response = conn.getresponse()
            answer = json.loads(response.read())
        except (OSError, http.client.HTTPException, ValueError):
            out.errors += 1
            conn.close()
            conn = http.client.HTTPConnection(*address, timeout=120)
            continue
        if response.status != 200:
            out.errors += 1
            continue
        out.latencies.append(time.perf_counter() - began)
        out.replies[text] = answer["translations"][0]
    conn.close()


def load(address: tuple[str, int], sentences: list[str], count: int, seconds: float) -> dict:
    """CLIENTS clients at once, each sending up to ``count`` requests for at most ``seconds``."""
    # Warm-up: the first batches pay for allocations and thread start-up.
    warm = ClientResults()
    _client(address, sentences, 0, 3, time.monotonic() + 30, threading.Barrier(1), warm)
    results = [ClientResults() for _ in range(CLIENTS)]
    barrier = threading.Barrier(CLIENTS + 1)
    deadline = time.monotonic() + seconds + 5  # counted from the barrier, below
    threads = [
        threading.Thread(
            target=_client,
            args=(address, sentences, 7 * c, count, deadline, barrier, results[c]),
            daemon=True,
        )
        for c in range(CLIENTS)
    ]
    for t in threads:
        t.start()
    barrier.wait()
    began = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - began
    latencies = sorted(x for r in results for x in r.latencies)
    replies: dict[str, str] = {}
    for r in results:
        replies.update(r.replies)

    def quantile(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] if latencies else 0.0

    return {
        "requests": len(latencies),
        "errors": sum(r.errors for r in results),
        "seconds": elapsed,
        "rps": len(latencies) / elapsed,
        "p50": quantile(0.50),
        "p99": quantile(0.99),
        "replies": replies,
    }


def run(quick: bool, beam: int) -> dict[str, dict]:
    model = trained_model(quick)
    sentences = test_sentences()
    count, seconds = RUNS[quick]
    rows = {}
    for mode, flags in MODES.items():
        server = ServerProcess(model, beam, flags)
        try:
            rows[mode] = load(server.address, sentences, count, seconds)
        finally:
            rows.setdefault(mode, {})["exit_code"] = server.stop()
    return rows


def table(rows: dict[str, dict], beam: int, quick: bool, load_before: float) -> str:
    batched, single = rows["batched"], rows["one at a time"]
    common = set(batched["replies"]) & set(single["replies"])
    same = sum(batched["replies"][t] == single["replies"][t] for t in common)
    count, seconds = RUNS[quick]
    lines = [
        f"`aiayn serve` (uvicorn, one model worker) with a `demo`-preset zh-en model, "
        f"{'greedy' if beam == 1 else f'beam {beam}'}; {CLIENTS} concurrent clients on loopback, "
        "each sending held-out test sentences to `POST /v1/translate` (one per request, "
        f"kept-alive connection) until it has sent {count} or about {seconds:g} s have passed. "
        "Latency: from sending a request to reading its answer. The clients run on the same "
        "machine.",
        "",
        "| serving | requests | errors | requests/s | p50 latency | p99 latency | clean stop |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for mode, r in rows.items():
        lines.append(
            f"| {mode} | {r['requests']} | {r['errors']} | {r['rps']:.1f} | "
            f"{r['p50'] * 1e3:.0f} ms | {r['p99'] * 1e3:.0f} ms | "
            f"{'yes' if r['exit_code'] == 0 else 'exit ' + str(r['exit_code'])} |"
        )
    lines += [
        "",
        f"Dynamic batching: {batched['rps'] / single['rps']:.1f}× the requests/s of one at a time; "
        f"{same} of the {len(common)} sentences both answered got the same translation from both.",
        "",
        machine_line() + f"; 1-minute load average before the run {load_before:.2f}",
    ]
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a shorter model and a shorter run")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--beam", type=int, default=4, help="beam size served (default 4)")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()[0]  # others' work on the machine skews both modes
    body = table(run(args.quick, args.beam), args.beam, args.quick, load_before)
    print(body)
    if not args.no_write:
        write_section(SECTION, body)


if __name__ == "__main__":
    main()
