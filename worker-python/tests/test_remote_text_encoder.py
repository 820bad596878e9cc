"""The remote FLUX.2 text encoder client against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import io
import json
import pickle
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from flexy_worker.errors import TextEncoderUnavailable, WorkerError
from flexy_worker.remote_text_encoder import fetch_prompt_embeds

TAIL = (8, 16)  # the real endpoint answers (B, 512, 15360); small here, same checks
TOKEN = "hf_test_token"


def _saved(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


class CreatesMarker:
    """Unpickling this runs code: it writes the marker file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


class Server:
    """A real HTTP server; each test sets `respond(handler)` to shape the answer."""

    def __init__(self):
        self.requests: list[dict] = []
        self.release = threading.Event()  # lets hanging handlers finish at teardown
        self.respond = lambda h: h.send_body(b"")
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                outer.requests.append({"path": self.path, "auth": self.headers.get("Authorization"),
                                       "body": json.loads(self.rfile.read(length))})
                outer.respond(self)

            def send_body(self, body: bytes, status: int = 200, length: int | None = None):
                self.send_response(status)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body) if length is None else length))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/predict"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self):
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


def fetch(server, prompts=("a red fox",), *, timeout_s=5.0, max_bytes=1 << 20, token=TOKEN):
    return fetch_prompt_embeds(list(prompts), server.url, token, timeout_s, max_bytes, TAIL)


def test_good_tensor_is_returned_and_the_request_is_well_formed(server):
    sent = torch.randn(2, *TAIL).to(torch.bfloat16)
    server.respond = lambda h: h.send_body(_saved(sent))
    got = fetch(server, ["a red fox", "雪の中の狐"])
    assert got.dtype == torch.bfloat16 and got.shape == (2, *TAIL)
    assert torch.equal(got, sent)
    assert server.requests == [{"path": "/predict", "auth": f"Bearer {TOKEN}", "body": {"prompt": ["a red fox", "雪の中の狐"]}}]


def test_float32_answer_is_cast_to_bfloat16(server):
    sent = torch.randn(1, *TAIL)
    server.respond = lambda h: h.send_body(_saved(sent))
    got = fetch(server)
    assert got.dtype == torch.bfloat16
    assert torch.equal(got, sent.to(torch.bfloat16))


def test_view_of_a_larger_storage_comes_back_compact(server):
    big = torch.randn(4, *TAIL).to(torch.bfloat16)
    server.respond = lambda h: h.send_body(_saved(big[1:2]))
    got = fetch(server)
    assert torch.equal(got, big[1:2])
    assert got.untyped_storage().nbytes() == got.numel() * got.element_size()


@pytest.mark.parametrize("container", ["torch_save", "raw_pickle", "inside_a_dict"])
def test_pickle_that_would_run_code_is_refused_and_never_runs(server, tmp_path, container):
    marker = tmp_path / "marker"
    evil = CreatesMarker(marker)
    body = {
        "torch_save": lambda: _saved(evil),
        "raw_pickle": lambda: pickle.dumps(evil),
        "inside_a_dict": lambda: _saved({"embeds": torch.zeros(1, *TAIL), "x": evil}),
    }[container]()
    server.respond = lambda h: h.send_body(body)
    with pytest.raises(TextEncoderUnavailable, match="not a safe tensor file"):
        fetch(server)
    assert not marker.exists()
    # Control: the same bytes do run code under an unrestricted load, so the refusal above mattered.
    control = tmp_path / "control"
    if container == "raw_pickle":
        pickle.loads(pickle.dumps(CreatesMarker(control)))
    else:
        torch.load(io.BytesIO(_saved(CreatesMarker(control))), weights_only=False)
    assert control.read_text() == "pwned"


def test_oversized_body_with_content_length_is_refused_before_reading(server):
    server.respond = lambda h: h.send_body(b"\0" * 2048)
    with pytest.raises(TextEncoderUnavailable, match="exceeds the cap of 1024 bytes"):
        fetch(server, max_bytes=1024)


def test_oversized_body_without_content_length_is_cut_at_the_cap(server):
    def stream_forever(h):
        h.send_response(200)
        h.send_header("Content-Type", "application/octet-stream")
        h.end_headers()  # HTTP/1.0 style: no length, the body runs until the server closes
        try:
            for _ in range(10_000):
                h.wfile.write(b"\0" * 65536)
        except (BrokenPipeError, ConnectionResetError):
            pass

    server.respond = stream_forever
    started = time.monotonic()
    with pytest.raises(TextEncoderUnavailable, match="exceeds the cap"):
        fetch(server, max_bytes=256 * 1024)
    assert time.monotonic() - started < 5


def test_dict_instead_of_tensor_is_refused(server):
    server.respond = lambda h: h.send_body(_saved({"prompt_embeds": torch.zeros(1, *TAIL, dtype=torch.bfloat16)}))
    with pytest.raises(TextEncoderUnavailable, match="sent a dict, expected a tensor"):
        fetch(server)


@pytest.mark.parametrize("shape", [(1, 8, 15), (2, *TAIL), (8, 16)])
def test_wrong_shape_is_refused(server, shape):
    server.respond = lambda h: h.send_body(_saved(torch.zeros(*shape, dtype=torch.bfloat16)))
    with pytest.raises(TextEncoderUnavailable, match=r"sent shape .* expected \(1, 8, 16\)"):
        fetch(server)


def test_wrong_dtype_and_non_finite_values_are_refused(server):
    server.respond = lambda h: h.send_body(_saved(torch.zeros(1, *TAIL, dtype=torch.int64)))
    with pytest.raises(TextEncoderUnavailable, match="dtype torch.int64"):
        fetch(server)
    nan = torch.zeros(1, *TAIL, dtype=torch.bfloat16)
    nan[0, 3, 3] = float("nan")
    server.respond = lambda h: h.send_body(_saved(nan))
    with pytest.raises(TextEncoderUnavailable, match="non-finite"):
        fetch(server)


def test_garbage_body_is_refused(server):
    server.respond = lambda h: h.send_body(b"<html>gateway error</html>")
    with pytest.raises(TextEncoderUnavailable, match="not a safe tensor file"):
        fetch(server)


def test_server_hanging_mid_body_hits_the_total_timeout(server):
    def hang_mid_body(h):
        h.send_response(200)
        h.send_header("Content-Length", "100000")
        h.end_headers()
        h.wfile.write(b"\0" * 1000)
        h.wfile.flush()
        server.release.wait(30)

    server.respond = hang_mid_body
    started = time.monotonic()
    with pytest.raises(TextEncoderUnavailable, match="did not answer within 0.5 s"):
        fetch(server, timeout_s=0.5)
    assert time.monotonic() - started < 2


def test_server_trickling_bytes_still_hits_the_total_timeout(server):
    # Each read succeeds quickly, so only a deadline over the whole exchange stops this.
    def trickle(h):
        h.send_response(200)
        h.send_header("Content-Length", "100000")
        h.end_headers()
        try:
            for _ in range(100):
                h.wfile.write(b"\0")
                h.wfile.flush()
                if server.release.wait(0.1):
                    return
        except (BrokenPipeError, ConnectionResetError):
            pass

    server.respond = trickle
    started = time.monotonic()
    with pytest.raises(TextEncoderUnavailable, match="did not answer within 0.6 s"):
        fetch(server, timeout_s=0.6)
    assert time.monotonic() - started < 2


def test_server_that_never_answers_hits_the_timeout(server):
    server.respond = lambda h: server.release.wait(30)
    started = time.monotonic()
    with pytest.raises(TextEncoderUnavailable, match="did not answer"):
        fetch(server, timeout_s=0.5)
    assert time.monotonic() - started < 2


@pytest.mark.parametrize("status,words", [(503, "paused"), (401, "token was rejected"), (500, "HTTP 500")])
def test_http_errors_name_the_status(server, status, words):
    server.respond = lambda h: h.send_body(b'{"error":"endpoint is paused"}', status=status)
    with pytest.raises(TextEncoderUnavailable) as exc:
        fetch(server)
    assert f"HTTP {status}" in str(exc.value) and words in str(exc.value)
    assert isinstance(exc.value, WorkerError) and exc.value.code == "text_encoder_unavailable"


def test_missing_token_fails_without_contacting_the_server(server):
    with pytest.raises(TextEncoderUnavailable, match="needs an HF token"):
        fetch(server, token=None)
    assert server.requests == []


def test_token_is_never_sent_over_plain_http_to_another_host():
    with pytest.raises(TextEncoderUnavailable, match="plain http"):
        fetch_prompt_embeds(["x"], "http://example.com/predict", TOKEN, 1.0, 1024, TAIL)


def test_closed_port_is_unreachable():
    s = Server()
    url = s.url
    s.close()
    with pytest.raises(TextEncoderUnavailable, match="unreachable"):
        fetch_prompt_embeds(["x"], url, TOKEN, 2.0, 1024, TAIL)
