"""Dynamic batching in ``aiayn serve``: concurrent requests share decoding batches, each still gets
its own translation, different decoding controls never share a batch, a failing batch answers 500
and the service keeps serving, ``/v1/translate`` checks its input, and SIGTERM stops it cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from aiayn.modeldir import load_model_dir
from aiayn.serving import ServeLimits, make_server
from aiayn.serving.batching import BatchFailed, BatchQueue, QueueClosed
from aiayn.tasks.translation import Translator
from tiny_translation import PAIRS, tiny_lm_model_dir, tiny_translation_model_dir

LIMITS = ServeLimits(max_body_bytes=4096, max_chars=100, max_tokens=20, max_output_tokens=6)
TEXTS = [source for source, _ in PAIRS] + ["我爱学生", "他们是老师", "我"]

# Tiny models gain nothing from a second thread, and on a busy machine they lose a lot.
pytestmark = pytest.mark.usefixtures("one_thread")


# ---- the queue alone -----------------------------------------------------------------------------


def _queue_run(coro_fn, **queue_kwargs):
    """Run ``coro_fn(queue)`` on a fresh event loop with a started queue; close it after."""
    calls: list[tuple[object, list]] = []
    fail = queue_kwargs.pop("fail", lambda key, items: False)

    def run_batch(key, items):
        calls.append((key, list(items)))
        if fail(key, items):
            raise RuntimeError("model exploded")
        return [f"{key}:{item}" for item in items]

    async def main():
        queue = BatchQueue(run_batch, **queue_kwargs)
        await queue.start()
        try:
            return await coro_fn(queue)
        finally:
            await queue.close()

    return asyncio.run(main()), calls


def test_concurrent_items_share_a_batch_up_to_max_batch():
    async def go(queue):
        return await asyncio.gather(*(queue.submit("k", i) for i in range(10)))

    results, calls = _queue_run(go, max_batch=4, wait_s=0.5)
    assert results == [f"k:{i}" for i in range(10)]  # each gets its own result, in order
    assert [len(items) for _, items in calls] == [4, 4, 2]


def test_different_keys_never_share_a_batch():
    async def go(queue):
        keys = ["a", "b", "a", "c", "b", "a"]
        return await asyncio.gather(*(queue.submit(k, i) for i, k in enumerate(keys)))

    results, calls = _queue_run(go, max_batch=8, wait_s=0.2)
    assert results == ["a:0", "b:1", "a:2", "c:3", "b:4", "a:5"]
    assert sorted((key, items) for key, items in calls) == [
        ("a", [0, 2, 5]),
        ("b", [1, 4]),
        ("c", [3]),
    ]


def test_alone_items_run_alone():
    async def go(queue):
        return await asyncio.gather(*(queue.submit("k", i, alone=i < 2) for i in range(4)))

    _, calls = _queue_run(go, max_batch=8, wait_s=0.2)
    assert sorted(items for _, items in calls) == [[0], [1], [2, 3]]


def test_a_failing_batch_fails_each_of_its_items_and_the_next_batch_runs():
    async def go(queue):
        first = await asyncio.gather(
            *(queue.submit("bad", i) for i in range(3)), return_exceptions=True
        )
        second = await queue.submit("good", 9)
        return first, second

    (first, second), calls = _queue_run(go, max_batch=8, wait_s=0.1, fail=lambda k, _: k == "bad")
    assert len(calls) == 2
    assert all(isinstance(e, BatchFailed) and "exploded" in str(e.cause) for e in first)
    assert second == "good:9"


def test_a_closed_queue_refuses_new_items():
    async def go(queue):
        await queue.close()
        with pytest.raises(QueueClosed):
            await queue.submit("k", 1)

    _queue_run(go)


# ---- the service ---------------------------------------------------------------------------------


@contextlib.contextmanager
def serving(model_dir, **kwargs):
    srv = make_server(load_model_dir(model_dir), "127.0.0.1", 0, 1, LIMITS, **kwargs)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(5)


@pytest.fixture(scope="module")
def server():
    # A long window, so that concurrent test requests surely meet even on a busy machine.
    with serving(tiny_translation_model_dir(), max_batch=16, batch_wait_ms=300) as srv:
        yield srv


def post(server, path, body, headers=None):
    """(status, parsed JSON) of one POST."""
    host, port = server.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=20)
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    conn.request("POST", path, data, {"Content-Type": "application/json", **(headers or {})})
    response = conn.getresponse()
    raw = response.read().decode()
    conn.close()
    assert "Traceback" not in raw
    return response.status, json.loads(raw)


def concurrently(server, bodies, path="/v1/translate"):
    """POST every body at once (one thread each, released together); the answers in order."""
    barrier = threading.Barrier(len(bodies))

    def one(body):
        barrier.wait()
        return post(server, path, body)

    with ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(one, bodies))


@pytest.fixture(scope="module")
def translator():
    return Translator.load(tiny_translation_model_dir())


def alone(translator, text, **controls):
    """The translation of ``text`` decoded alone, as the service's settings say."""
    from aiayn.logits import make_controls

    tok = translator.tgt_tok
    made = make_controls(tok.encode, tok.unk_id, **controls) if controls else None
    return translator.translate([text], beam=1, max_len=LIMITS.max_output_tokens, controls=made)[0]


def test_concurrent_requests_are_decoded_in_fewer_batches_each_with_its_own_translation(
    server, translator
):
    before = server.service.queue.stats.batches
    answers = concurrently(server, [{"text": t} for t in TEXTS])
    batches = server.service.queue.stats.batches - before
    assert 1 <= batches < len(TEXTS)
    for text, (status, body) in zip(TEXTS, answers):
        assert status == 200
        assert body == {"translations": [alone(translator, text)]}


def test_texts_of_one_request_come_back_in_order(server, translator):
    status, body = post(server, "/v1/translate", {"texts": TEXTS})
    assert status == 200 and body["translations"] == [alone(translator, t) for t in TEXTS]


def test_different_controls_are_never_decoded_together(server, translator, monkeypatch):
    seen: list[tuple[list[str], dict]] = []
    backend = server.backend
    run_batch = backend.run_batch

    def recording(texts, controls):
        seen.append((list(texts), dict(controls)))
        return run_batch(texts, controls)

    monkeypatch.setattr(backend, "run_batch", recording)
    ban = {"ban": ["I"], "no_repeat_ngram": 1}
    bodies = [{"text": t, **(ban if i % 2 else {})} for i, t in enumerate(TEXTS)]
    answers = concurrently(server, bodies)
    for body, (status, answer) in zip(bodies, answers):
        controls = {k: v for k, v in body.items() if k != "text"}
        assert status == 200 and answer["translations"] == [
            alone(translator, body["text"], **controls)
        ]
    assert len(seen) < len(bodies)  # still batched, within each group
    for texts, controls in seen:
        wanted = [b for b in bodies if b["text"] in texts]
        assert all({k: v for k, v in b.items() if k != "text"} == controls for b in wanted)


def test_a_failing_batch_answers_500_to_each_and_the_service_goes_on(server, monkeypatch, caplog):
    def broken(texts, controls):
        raise RuntimeError("secret detail")

    monkeypatch.setattr(server.backend, "run_batch", broken)
    answers = concurrently(server, [{"text": t} for t in TEXTS[:4]])
    assert all(a == (500, {"error": "internal server error"}) for a in answers)
    assert "secret detail" in caplog.text  # logged on the server, not sent
    monkeypatch.undo()
    status, body = post(server, "/v1/translate", {"text": TEXTS[0]})
    assert status == 200 and body["translations"][0]


@pytest.mark.parametrize(
    "body, status, message",
    [
        (b'{"text": ', 400, "invalid JSON"),
        (b"[1]", 400, "expected a JSON object"),
        ({"txt": "a"}, 400, 'expected {"text": "..."} or {"texts"'),
        ({"text": "a", "texts": ["b"]}, 400, 'or {"texts"'),
        ({"text": 5}, 400, "with a string"),
        ({"texts": "a"}, 400, "non-empty list"),
        ({"texts": []}, 400, "non-empty list"),
        ({"texts": ["a", 5]}, 400, "texts[1] is not a string"),
        ({"texts": ["a", " "]}, 400, "texts[1] is empty"),
        ({"text": "我" * 101}, 400, "the text has 101 characters; the limit is 100"),
        ({"texts": ["a", "我" * 30]}, 400, "texts[1]: the text has 31 tokens; the limit is 20"),
        ({"texts": ["a"] * 65}, 400, '"texts" has 65 texts; the limit is 64'),
        ({"text": "a", "min_len": -1}, 400, '"min_len" must be an integer >= 0'),
    ],
)
def test_v1_translate_refuses_bad_input(server, body, status, message):
    got, answer = post(server, "/v1/translate", body)
    assert got == status and message in answer["error"]


def test_v1_translate_keeps_the_guards(server):
    status, answer = post(
        server, "/v1/translate", {"text": "a"}, {"Origin": "https://evil.example"}
    )
    assert status == 403 and "other sites" in answer["error"]
    status, answer = post(server, "/v1/translate", {"text": "a"}, {"Host": "evil.example"})
    assert status == 403
    host, port = server.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=10)
    conn.request("GET", "/v1/translate")
    response = conn.getresponse()
    assert response.status == 405 and response.getheader("Allow") == "POST"
    assert response.getheader("X-Content-Type-Options") == "nosniff"
    conn.close()


def test_info_names_the_batch_endpoint(server):
    host, port = server.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=10)
    conn.request("GET", "/api/info")
    info = json.loads(conn.getresponse().read())
    conn.close()
    assert info["batch_endpoint"] == "/v1/translate"
    assert info["batching"] == {"max_batch": 16, "batch_wait_ms": 300.0, "workers": 1}
    assert info["limits"]["max_texts"] == 64


def test_one_at_a_time_still_answers_everyone(translator):
    with serving(tiny_translation_model_dir(), max_batch=1) as srv:
        answers = concurrently(srv, [{"text": t} for t in TEXTS[:4]])
        assert srv.service.queue.stats.sizes == [1, 1, 1, 1]
    assert [a[1]["translations"][0] for a in answers] == [alone(translator, t) for t in TEXTS[:4]]


def test_v1_generate_for_a_gpt():
    from aiayn.tasks.lm import LanguageModel

    with serving(tiny_lm_model_dir(), batch_wait_ms=100) as srv:
        status, body = post(srv, "/v1/generate", {"texts": ["the cat", "the dog"]})
        status_tr, _ = post(srv, "/v1/translate", {"text": "the cat"})
    lm = LanguageModel.load(tiny_lm_model_dir())
    expected = [
        lm.generate(t, max_new_tokens=6, temperature=0.8, seed=0) for t in ("the cat", "the dog")
    ]
    assert status == 200 and body == {"continuations": expected}
    assert status_tr == 404


def test_shutdown_answers_the_requests_in_flight(monkeypatch):
    with serving(tiny_translation_model_dir(), max_batch=2, batch_wait_ms=0) as srv:
        run_batch = srv.backend.run_batch

        def slow(texts, controls):
            time.sleep(0.3)
            return run_batch(texts, controls)

        monkeypatch.setattr(srv.backend, "run_batch", slow)
        with ThreadPoolExecutor(6) as pool:
            futures = [pool.submit(post, srv, "/v1/translate", {"text": t}) for t in TEXTS[:6]]
            time.sleep(0.4)  # the first batch is running, the others are queued
            began = time.monotonic()
            srv.shutdown()
            assert time.monotonic() - began < 10
            answers = [f.result(timeout=10) for f in futures]
    # Queued requests are finished (or, past the grace period, refused with a 503): none hangs.
    assert all(status in (200, 503) for status, _ in answers)
    assert answers[0][0] == 200


def test_sigterm_stops_the_command_cleanly():
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "aiayn", "serve", "--model", str(tiny_translation_model_dir())]
    proc = subprocess.Popen(
        [*cmd, "--port", "0", "--beam", "1"], stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        deadline = time.monotonic() + 60
        url = None
        while url is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            if " at http://" in line:
                url = line.split(" at ", 1)[1].split()[0]
        assert url, "the server never said where it listens"
        host, port = url.removeprefix("http://").rstrip("/").rsplit(":", 1)
        srv = type("S", (), {"server_address": (host, int(port))})()
        status, body = post(srv, "/v1/translate", {"text": TEXTS[0]})
        assert status == 200 and body["translations"][0]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        assert "stopped" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
