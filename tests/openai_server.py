"""An OpenAI-compatible completions server for the tests of model.backend=openai, on the standard library's
http.server: a transformers model answers /v1/models and /v1/completions (token-id prompts; echo with the
prompt's log-probabilities and top alternatives, as vLLM answers them; greedy generation with stop strings), and
a script of faults plays a busy, slow, broken or stopping server."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


class CompletionsServer:
    """Serves the model at `model_dir` as `name` on 127.0.0.1 (a free port). `faults` is consumed one entry per
    /v1/completions request: "500", "429" (an error status), "hang" (answers after hang_s), "garbage" (a body that
    is not JSON), "ok" (none); `prompt_logprobs=False` plays a server that cannot echo log-probabilities; `stop_after`
    completions, the server closes."""

    def __init__(self, model_dir: Path, name: str = "served-model", max_model_len: int = 512) -> None:
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.name, self.max_model_len = name, max_model_len
        self.faults: list[str] = []
        self.hang_s = 3.0
        self.prompt_logprobs = True
        self.stop_after: int | None = None
        self.completions = 0  # answered
        self.in_flight = self.most_in_flight = 0  # completions requests being answered at once
        self.lock = threading.Lock()
        self.http = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.http.daemon_threads = True
        self.http.handle_error = lambda request, address: None  # a client that gave up (its timeout) closed the socket
        self.thread = threading.Thread(target=self.http.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http.server_address[1]}/v1"

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()

    def models(self) -> dict:
        return {"object": "list", "data": [{"id": self.name, "object": "model", "root": "/models/served",
                                            "max_model_len": self.max_model_len}]}

    def complete(self, body: dict) -> dict:
        ids = body["prompt"]
        with self.lock, torch.no_grad():
            if body.get("echo"):
                logprobs = torch.log_softmax(self.model(torch.tensor([ids])).logits[0].double(), dim=-1)
                token_logprobs: list[float | None] = [None]
                top: list[dict[str, float] | None] = [None]
                for position in range(1, len(ids)):
                    row = logprobs[position - 1]
                    best = int(row.argmax())
                    token_logprobs.append(float(row[ids[position]]))
                    top.append({self.tokenizer.decode([best]): float(row[best]),
                                self.tokenizer.decode([ids[position]]): float(row[ids[position]])})
                new = int(logprobs[-1].argmax())
                answer = {"text": self.tokenizer.decode(ids + [new]), "index": 0, "finish_reason": "length",
                          "logprobs": {"token_logprobs": token_logprobs + [float(logprobs[-1, new])],
                                       "top_logprobs": top + [{self.tokenizer.decode([new]): float(logprobs[-1, new])}]}
                          if self.prompt_logprobs else None}
                return {"choices": [answer], "usage": {"prompt_tokens": len(ids), "completion_tokens": 1}}
            generated: list[int] = []
            text, reason = "", "length"
            for _ in range(body["max_tokens"]):
                token = int(self.model(torch.tensor([ids + generated])).logits[0, -1].argmax())
                if token == self.tokenizer.eos_token_id:
                    reason = "stop"
                    break
                generated.append(token)
                text = self.tokenizer.decode(generated)
                hits = [text.index(stop) for stop in body.get("stop") or [] if stop in text]
                if hits:
                    text, reason = text[: min(hits)], "stop"
                    break
            return {"choices": [{"text": text, "index": 0, "finish_reason": reason, "logprobs": None}],
                    "usage": {"prompt_tokens": len(ids), "completion_tokens": len(generated)}}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def _send(self, status: int, payload: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self) -> None:
                self._send(200, json.dumps(server.models()).encode())

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    fault = server.faults.pop(0) if server.faults else None
                if fault in ("500", "429"):
                    self._send(int(fault), b'{"error": "busy"}')
                    return
                if fault == "garbage":
                    self._send(200, b"<html>proxy error</html>")
                    return
                if fault == "hang":
                    time.sleep(server.hang_s)
                if len(body["prompt"]) + body.get("max_tokens", 16) > server.max_model_len:  # as vLLM refuses it
                    self._send(400, b'{"error": "prompt and max_tokens longer than max_model_len"}')
                    return
                if body.get("model") != server.name:
                    self._send(404, json.dumps({"error": f"model {body.get('model')} not found"}).encode())
                    return
                with server.lock:
                    server.in_flight += 1
                    server.most_in_flight = max(server.most_in_flight, server.in_flight)
                time.sleep(0.05)  # long enough for requests sent together to overlap
                answer = json.dumps(server.complete(body)).encode()
                with server.lock:
                    server.in_flight -= 1
                self._send(200, answer)
                with server.lock:
                    server.completions += 1
                    if server.stop_after is not None and server.completions >= server.stop_after:
                        threading.Thread(target=server.close, daemon=True).start()

        return Handler
