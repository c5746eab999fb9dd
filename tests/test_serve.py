"""``aiayn serve``: the JSON API answers with the model's own translation and maps, and every bad
request gets a clean 4xx (never a traceback) while the server keeps serving."""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import re
import socket
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from aiayn.cli import build_parser
from aiayn.cli.serve import ServeLimits, make_server
from aiayn.errors import AiaynError
from aiayn.modeldir import load_model_dir
from aiayn.tasks.translation import Translator
from tiny_translation import tiny_lm_model_dir, tiny_translation_model_dir

LIMITS = ServeLimits(max_body_bytes=4096, max_chars=100, max_tokens=20, max_output_tokens=6)


# Tiny models gain nothing from a second thread, and on a busy machine they lose a lot.
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def server():
    srv = make_server(load_model_dir(tiny_translation_model_dir()), "127.0.0.1", 0, 1, LIMITS)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(5)


def request(server, method, path, body=None, headers=None):
    """(status, headers, parsed JSON or text) of one request on a fresh connection."""
    host, port = server.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=10)
    if isinstance(body, dict | list):
        body = json.dumps(body).encode()
        headers = {"Content-Type": "application/json", **(headers or {})}
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    raw = response.read()
    conn.close()
    text = raw.decode("utf-8")
    assert "Traceback" not in text
    kind = response.getheader("Content-Type", "")
    return response.status, response, json.loads(text) if "json" in kind else text


def raw_exchange(server, data: bytes) -> bytes:
    """Send raw bytes, read the whole answer (the server closes these connections)."""
    with socket.create_connection(server.server_address[:2], timeout=10) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def assert_still_serving(server):
    status, _, body = request(server, "GET", "/api/info")
    assert status == 200 and body["kind"] == "transformer"


def test_page_is_self_contained_with_a_strict_policy(server):
    status, response, page = request(server, "GET", "/")
    assert status == 200 and response.getheader("Content-Type") == "text/html; charset=utf-8"
    assert "http://" not in page and "https://" not in page  # no CDN, nothing fetched from outside
    assert "innerHTML" not in page and "insertAdjacentHTML" not in page and "eval(" not in page
    csp = response.getheader("Content-Security-Policy")
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp
    (script,) = re.findall(r"<script>(.*?)</script>", page, flags=re.S)
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    assert f"'sha256-{digest}'" in csp  # exactly this inline script may run
    assert response.getheader("X-Content-Type-Options") == "nosniff"
    status, response, _ = request(server, "HEAD", "/")
    assert status == 200 and int(response.getheader("Content-Length")) == len(page.encode())


def test_info(server):
    status, _, info = request(server, "GET", "/api/info")
    assert status == 200
    assert info["endpoint"] == "/api/translate" and info["heads"] == 2
    assert info["layers"] == {"encoder": 2, "decoder": 2, "cross": 2}
    assert info["limits"]["max_chars"] == 100


def test_translate_returns_the_models_translation_and_maps(server):
    text = "我是一个学生"
    status, _, body = request(server, "POST", "/api/translate", {"text": text})
    assert status == 200
    translator = Translator.load(tiny_translation_model_dir())
    expected = translator.translate([text], beam=1, max_len=LIMITS.max_output_tokens)[0]
    assert body["translation"] == body["output"] == expected != ""
    src_tokens, tgt_tokens = translator.tokens_of(text, expected)
    assert body["source_tokens"] == src_tokens and body["target_tokens"] == tgt_tokens
    assert body["next_tokens"] == [*tgt_tokens[1:], "<eos>"]
    maps = translator.attention(text, expected)
    for name, field in (
        ("cross", maps.cross),
        ("encoder", maps.encoder),
        ("decoder", maps.decoder_self),
    ):
        got = np.array(body["attention"][name])  # (layers, H, T, S)
        want = np.stack([m[0].numpy() for m in field])
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, atol=5.1e-5)  # rounded to 4 decimals
        np.testing.assert_allclose(got.sum(-1), 1.0, atol=1e-3)
    views = {v["name"]: (v["queries"], v["keys"]) for v in body["views"]}
    assert views["cross"] == ("target_tokens", "source_tokens")
    assert views["encoder"] == ("source_tokens", "source_tokens")
    # /api/run is the same endpoint for any model kind
    status, _, again = request(server, "POST", "/api/run", {"text": text, "ignored": 1})
    assert status == 200 and again == body


@pytest.mark.parametrize(
    "body, headers, status, message",
    [
        (b'{"text": ', {"Content-Type": "application/json"}, 400, "invalid JSON"),
        (b"\xff\xfe{}", {"Content-Type": "application/json"}, 400, "not UTF-8"),
        (b"[1, 2]", {"Content-Type": "application/json"}, 400, "expected a JSON object"),
        (b'{"txt": "a"}', {"Content-Type": "application/json"}, 400, "with a string"),
        (b'{"text": 5}', {"Content-Type": "application/json"}, 400, "with a string"),
        (b'{"text": "  "}', {"Content-Type": "application/json"}, 400, "empty"),
        (b'{"text": "hi"}', {"Content-Type": "text/plain"}, 415, "application/json"),
        (b"text=hi", {"Content-Type": "application/x-www-form-urlencoded"}, 415, "JSON"),
        (b"[" * 5000 + b"]" * 5000, {"Content-Type": "application/json"}, 413, "limit is 4096"),
        (b"[" * 4000, {"Content-Type": "application/json"}, 400, "invalid JSON"),
    ],
)
def test_malformed_requests_get_a_400_family_answer(server, body, headers, status, message):
    got, _, answer = request(server, "POST", "/api/translate", body, headers)
    assert got == status and message in answer["error"]
    assert_still_serving(server)


def test_text_limits(server):
    status, _, answer = request(server, "POST", "/api/translate", {"text": "我" * 101})
    assert status == 400 and answer["error"] == "the text has 101 characters; the limit is 100"
    status, _, answer = request(server, "POST", "/api/translate", {"text": "我" * 30})
    assert status == 400 and answer["error"] == "the text has 31 tokens; the limit is 20"  # ▁ + 30
    assert_still_serving(server)


def test_oversized_body_is_refused_unread_and_the_connection_closed(server):
    host, port = server.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=10)
    body = json.dumps({"text": "a" * 100_000}).encode()
    conn.request("POST", "/api/translate", body, {"Content-Type": "application/json"})
    response = conn.getresponse()
    assert response.status == 413 and response.getheader("Connection") == "close"
    assert "limit is 4096" in json.loads(response.read())["error"]
    conn.close()
    assert_still_serving(server)


def test_length_is_required(server):
    answer = raw_exchange(
        server,
        b"POST /api/translate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 411 ")
    answer = raw_exchange(
        server,
        b"POST /api/translate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: -5\r\n"
        b"Connection: close\r\n\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 400 ") and b"Content-Length" in answer
    assert_still_serving(server)


def test_unknown_paths_and_wrong_methods(server):
    status, _, answer = request(server, "GET", "/etc/passwd")
    assert status == 404 and "no such page" in answer["error"]
    status, response, answer = request(server, "GET", "/api/translate")
    assert status == 405 and response.getheader("Allow") == "POST"
    for method in ("PUT", "DELETE", "PATCH", "OPTIONS"):
        status, response, _ = request(server, method, "/")
        assert status == 405 and response.getheader("Allow") == "GET, HEAD"
    status, _, _ = request(server, "POST", "/", {"text": "a"})
    assert status == 405
    assert_still_serving(server)


def test_garbage_on_the_wire(server):
    answer = raw_exchange(server, b"NONSENSE\r\n\r\n")
    assert b"Traceback" not in answer
    answer = raw_exchange(server, b"BREW /pot HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 501 ") and b'"error"' in answer
    answer = raw_exchange(server, b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 414 ")
    raw_exchange(server, b"POST /api/translate HTTP/1.1\r\nContent-Length: 50\r\n\r\n{")  # hang up
    assert_still_serving(server)


def test_foreign_host_names_are_refused(server):
    status, _, answer = request(server, "GET", "/api/info", headers={"Host": "evil.example:80"})
    assert status == 403 and "localhost" in answer["error"]
    status, _, _ = request(server, "GET", "/api/info", headers={"Host": "localhost:1234"})
    assert status == 200


def test_an_internal_error_is_a_500_without_details(server, monkeypatch, caplog):
    def broken(text):
        raise RuntimeError("secret detail")

    monkeypatch.setattr(server.backend, "run", broken)
    status, _, answer = request(server, "POST", "/api/translate", {"text": "我"})
    assert status == 500 and answer == {"error": "internal server error"}
    assert "secret detail" in caplog.text  # logged on the server's stderr, not sent to the client
    monkeypatch.undo()
    status, _, _ = request(server, "POST", "/api/translate", {"text": "我"})
    assert status == 200


def test_kept_alive_connection_serves_several_requests(server):
    host, port = server.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=10)
    for _ in range(3):
        conn.request("GET", "/api/info")
        response = conn.getresponse()
        assert response.status == 200
        json.loads(response.read())
    conn.request("POST", "/api/translate", b"{", {"Content-Type": "application/json"})
    response = conn.getresponse()
    assert response.status == 400
    response.read()
    conn.request("GET", "/api/info")  # the body was read, so the connection is still in step
    assert conn.getresponse().status == 200
    conn.close()


def test_language_model_generation_and_self_attention():
    lm_app = pytest.importorskip("aiayn.tasks.lm")
    from aiayn.viz import lm_attention_maps

    limits = ServeLimits(max_chars=100, max_tokens=20, max_output_tokens=8)
    srv = make_server(load_model_dir(tiny_lm_model_dir()), "127.0.0.1", 0, limits=limits)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        status, _, info = request(srv, "GET", "/api/info")
        assert status == 200 and info["kind"] == "gpt" and info["endpoint"] == "/api/generate"
        assert info["layers"] == {"self": 2}
        status, _, body = request(srv, "POST", "/api/generate", {"text": "the cat"})
        assert status == 200
        lm = lm_app.LanguageModel.load(tiny_lm_model_dir())
        expected = lm.generate("the cat", max_new_tokens=8, temperature=0.8, seed=0)
        assert body["continuation"] == body["output"] == expected
        ids = lm.tokenizer.encode("the cat" + expected)
        assert body["tokens"] == [lm.tokenizer.id_to_token(i) for i in ids]
        assert body["prompt_length"] == len("the cat")
        want = np.stack([m[0].numpy() for m in lm_attention_maps(lm.model, ids)])
        np.testing.assert_allclose(np.array(body["attention"]["self"]), want, atol=5.1e-5)
        assert [v["name"] for v in body["views"]] == ["self"]
        status, _, answer = request(srv, "POST", "/api/generate", {"text": "the " * 6})
        assert status == 400 and answer["error"] == "the text has 24 tokens; the limit is 20"
        status, _, _ = request(srv, "POST", "/api/translate", {"text": "the cat"})
        assert status == 404
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(5)


def test_models_without_a_backend_are_refused():
    fake = SimpleNamespace(kind="vit", directory=Path("some/dir"))
    with pytest.raises(AiaynError, match="handles transformer, gpt models, not vit"):
        make_server(fake, "127.0.0.1", 0)


def test_a_busy_port_is_a_clear_error(server):
    port = server.server_address[1]
    with pytest.raises(AiaynError, match=f"cannot listen on 127.0.0.1:{port}"):
        make_server(load_model_dir(tiny_translation_model_dir()), "127.0.0.1", port)


def test_cli_defaults_bind_to_localhost():
    args = build_parser().parse_args(["serve", "--model", "m"])
    assert (args.host, args.port, args.beam, args.max_chars) == ("127.0.0.1", 8000, 4, 500)


def test_a_huge_json_number_and_a_lone_surrogate_are_400():
    # The default body limit (unlike the tests' 4 KB) lets a 5,000-digit number reach the parser.
    server = make_server(load_model_dir(tiny_translation_model_dir()), "127.0.0.1", 0, 1)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    for body in (b'{"text": "hi", "n": ' + b"9" * 5000 + b"}", b'{"text": "a\\ud800b"}'):
        conn = http.client.HTTPConnection(host, port, timeout=10)
        conn.request(
            "POST", "/api/translate", body=body, headers={"Content-Type": "application/json"}
        )
        response = conn.getresponse()
        answer = json.loads(response.read())
        conn.close()
        assert response.status == 400, answer
    assert "surrogate" in answer["error"]
    assert_still_serving(server)
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_a_post_from_another_origin_is_refused(server):
    host, port = server.server_address[:2]
    status, _, answer = request(
        server, "POST", "/api/translate", {"text": "我爱你"}, {"Origin": "https://evil.example"}
    )
    assert status == 403 and "other sites" in answer["error"]
    status, _, _ = request(server, "POST", "/api/translate", {"text": "我爱你"}, {"Origin": "null"})
    assert status == 403
    same = {"Origin": f"http://{host}:{port}", "Host": f"{host}:{port}"}
    status, _, _ = request(server, "POST", "/api/translate", {"text": "我爱你"}, same)
    assert status == 200


def test_on_every_interface_dns_names_need_allow_host(tmp_path):
    srv = make_server(
        load_model_dir(tiny_translation_model_dir()), "0.0.0.0", 0, 1, LIMITS,
        allowed_hosts=["mybox.lan"],
    )  # fmt: skip
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        for name, expected in [
            ("evil.example", 403),  # DNS rebinding: refused even on 0.0.0.0
            ("mybox.lan:8000", 200),
            ("192.168.1.5:8000", 200),  # an IP address can't be a rebound name
            ("[::1]:8000", 200),
            ("localhost", 200),
        ]:
            status, _, _ = request(srv, "GET", "/api/info", headers={"Host": name})
            assert status == expected, name
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(5)


@pytest.mark.parametrize(
    "argv",
    [
        ["serve", "--model", "m", "--port", "70000"],
        ["serve", "--model", "m", "--beam", "1000"],
        ["translate", "--model", "m", "--beam", "65", "x"],
        ["generate", "--model", "m", "--temperature", "nan", "x"],
        ["generate", "--model", "m", "--temperature", "inf", "x"],
        ["generate", "--model", "m", "--top-p", "nan", "x"],
    ],
)
def test_out_of_range_limits_are_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(argv)
    assert exc.value.code == 2
    assert "error" in capsys.readouterr().err
