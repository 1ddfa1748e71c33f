"""A small OpenAI-compatible server for tests and offline demos.

    with OpenAIServer() as srv:
        os.environ["OPENAI_BASE_URL"] = srv.base_url     # http://127.0.0.1:PORT/v1
        srv.fail_next(1, status=429, retry_after=1)      # then answers normally
        srv.set_usage(100, 20)                           # fixed usage in every answer
        srv.responder = lambda req: "hello"              # script the replies

Endpoints: POST /v1/chat/completions (plain, and `stream: true` as SSE chunks with usage
in a final chunk when `stream_options.include_usage`), POST /v1/images/generations,
GET /v1/models, and GET /images/<name>.png (a 1x1 PNG, so generated URLs resolve).

Tool calls (deterministic): when a request offers `tools`, each line of the last user
message of the form `tool: NAME {json arguments}` is one turn: the k-th assistant reply
calls the k-th such tool (a `tool_calls` reply). Once every line has had its turn, or
when no tools are offered, the reply is "Tools said: " and the tool messages' contents
joined by " | ".

The default responder: for a prompt containing "Choose one of:" it answers a label
from keywords in the request (the "Choose one of:" line itself is ignored):
"both" -> both, "draw"/"picture" -> image, else text. Otherwise it answers
"Answer: <first 40 chars of the last user message>".

Standalone: `python -m tests.servers.openai_server --port 8765` prints the base URL.
"""

from __future__ import annotations

import argparse
import base64
import itertools
import json
import re
import time
from typing import Any, Callable

from . import RecordedCall, RecordingServer, Reply

# 1x1 transparent PNG
PNG_1X1 = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==")

Responder = Callable[[dict], str]


def message_text(message: dict) -> str:
    content = message.get("content")
    if isinstance(content, list):  # [{"type": "text", "text": ...}, ...]
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content or ""


def last_user_message(request: dict) -> str:
    for message in reversed(request.get("messages") or []):
        if message.get("role") == "user":
            return message_text(message)
    return ""


def default_responder(request: dict) -> str:
    prompt = last_user_message(request)
    if "choose one of:" in prompt.lower():
        text = "\n".join(line for line in prompt.splitlines() if "choose one of:" not in line.lower()).lower()
        if re.search(r"\bboth\b", text):
            return "both"
        if "draw" in text or "picture" in text:
            return "image"
        return "text"
    return "Answer: " + prompt[:40]


_TOOL_LINE = re.compile(r"^\s*tool:\s*([A-Za-z0-9_\-]+)\s*(\{.*\})?\s*$", re.MULTILINE)


def tool_turn(request: dict) -> dict | None:
    """The tool call due in this turn (see the module doc), or None for a text answer."""
    if not request.get("tools"):
        return None
    lines = _TOOL_LINE.findall(last_user_message(request))
    turn = sum(1 for m in request.get("messages") or [] if m.get("role") == "assistant" and m.get("tool_calls"))
    if turn >= len(lines):
        return None
    name, args = lines[turn]
    return {"id": f"call_{turn + 1}", "type": "function",
            "function": {"name": name, "arguments": args or "{}"}}


def tool_answers(request: dict) -> str | None:
    said = [message_text(m) for m in request.get("messages") or [] if m.get("role") == "tool"]
    return "Tools said: " + " | ".join(said) if said or _TOOL_LINE.search(last_user_message(request)) else None


def _words(text: str) -> int:
    return len(text.split())


class OpenAIServer(RecordingServer):
    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, responder: Responder | None = None,
                 delay: float = 0.0, stream_delay: float = 0.0, require_key: str | None = None):
        super().__init__(host, port, delay=delay)
        self.responder: Responder = responder or default_responder
        self.stream_delay = stream_delay        # seconds between streamed chunks
        self.require_key = require_key          # when set, other keys get a 401 echoing the key sent
        self._usage: tuple[int, int] | None = None
        self._ids = itertools.count(1)

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def set_usage(self, prompt: int | None, completion: int | None = None) -> None:
        """Report this fixed usage in every answer (None: count words instead)."""
        self._usage = None if prompt is None else (prompt, completion or 0)

    def faultable(self, call: RecordedCall) -> bool:
        return call.method == "POST"

    def error_reply(self, status: int, message: str, call: RecordedCall | None = None) -> Reply:
        kind = {429: "rate_limit_error", 401: "invalid_request_error"}.get(
            status, "server_error" if status >= 500 else "invalid_request_error")
        return Reply(status, {"error": {"message": message, "type": kind, "param": None, "code": None}})

    # ------------------------------------------------------------ routes

    def handle(self, call: RecordedCall) -> Reply:
        if call.method == "GET" and call.path.startswith("/images/"):
            return Reply(200, PNG_1X1, content_type="image/png")
        if self.require_key is not None:
            given = call.headers.get("authorization", "")
            if given != f"Bearer {self.require_key}":
                key = given.removeprefix("Bearer ")
                return Reply(401, {"error": {"message": f"Incorrect API key provided: {key}.",
                                             "type": "invalid_request_error", "param": None,
                                             "code": "invalid_api_key"}})
        if call.method == "GET" and call.path == "/v1/models":
            return Reply(200, {"object": "list", "data": [
                {"id": m, "object": "model", "created": 0, "owned_by": "agentflow-tests"}
                for m in ("gpt-4o-mini", "gpt-4o", "dall-e-3", "gpt-image-1")]})
        if call.method == "POST" and call.path == "/v1/chat/completions":
            return self._chat(call.json or {})
        if call.method == "POST" and call.path == "/v1/images/generations":
            return self._images(call.json or {})
        return self.error_reply(404, f"unknown endpoint {call.method} {call.path}", call)

    def _usage_for(self, request: dict, answer: str) -> dict:
        if self._usage is not None:
            prompt, completion = self._usage
        else:
            prompt = sum(_words(message_text(m)) for m in request.get("messages") or [])
            completion = _words(answer)
        return {"prompt_tokens": prompt, "completion_tokens": completion,
                "total_tokens": prompt + completion}

    def _chat(self, req: dict) -> Reply:
        if not req.get("messages"):
            return self.error_reply(400, "'messages' is required")
        call = tool_turn(req)
        if call is not None:
            usage = self._usage_for(req, "")
            return Reply(200, {"id": f"chatcmpl-{next(self._ids)}", "object": "chat.completion",
                               "created": int(time.time()), "model": req.get("model") or "gpt-4o-mini",
                               "choices": [{"index": 0, "finish_reason": "tool_calls", "logprobs": None,
                                            "message": {"role": "assistant", "content": None,
                                                        "tool_calls": [call]}}],
                               "usage": usage})
        answer = tool_answers(req)
        answer = str(self.responder(req)) if answer is None else answer
        finish = "stop"
        limit = req.get("max_tokens") or req.get("max_completion_tokens")
        if limit and _words(answer) > limit:
            answer, finish = " ".join(answer.split()[:limit]), "length"
        model = req.get("model") or "gpt-4o-mini"
        cid, created = f"chatcmpl-{next(self._ids)}", int(time.time())
        usage = self._usage_for(req, answer)
        if not req.get("stream"):
            return Reply(200, {"id": cid, "object": "chat.completion", "created": created, "model": model,
                               "choices": [{"index": 0, "finish_reason": finish, "logprobs": None,
                                            "message": {"role": "assistant", "content": answer}}],
                               "usage": usage})
        include_usage = bool((req.get("stream_options") or {}).get("include_usage"))
        return Reply(200, stream=self._sse(cid, created, model, answer, finish,
                                           usage if include_usage else None))

    def _sse(self, cid: str, created: int, model: str, answer: str, finish: str, usage: dict | None):
        def event(choices: list, **extra: Any) -> bytes:
            chunk = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                     "choices": choices, **extra}
            return b"data: " + json.dumps(chunk).encode() + b"\n\n"

        yield event([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
        for piece in re.findall(r"\s*\S+", answer) or [answer]:
            if self.stream_delay:
                time.sleep(self.stream_delay)
            yield event([{"index": 0, "delta": {"content": piece}, "finish_reason": None}])
        yield event([{"index": 0, "delta": {}, "finish_reason": finish}])
        if usage is not None:
            yield event([], usage=usage)
        yield b"data: [DONE]\n\n"

    def _images(self, req: dict) -> Reply:
        prompt = req.get("prompt") or ""
        if not prompt:
            return self.error_reply(400, "'prompt' is required")
        n = int(req.get("n") or 1)
        model = req.get("model") or "dall-e-2"
        b64 = req.get("response_format") == "b64_json" or model.startswith("gpt-image")
        data = []
        for i in range(n):
            item: dict[str, Any] = {"revised_prompt": f"A picture of: {prompt[:200]}"}
            if b64:
                item["b64_json"] = base64.b64encode(PNG_1X1).decode()
            else:
                item["url"] = f"{self.url}/images/{next(self._ids)}-{i}.png"
            data.append(item)
        body: dict[str, Any] = {"created": int(time.time()), "data": data}
        if model.startswith("gpt-image"):
            words = _words(prompt)
            body["usage"] = {"input_tokens": words, "output_tokens": 272 * n, "total_tokens": words + 272 * n,
                             "input_tokens_details": {"text_tokens": words, "image_tokens": 0}}
        return Reply(200, body)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="OpenAI-compatible test server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before each answer")
    parser.add_argument("--stream-delay", type=float, default=0.02, help="seconds between streamed chunks")
    args = parser.parse_args(argv)
    server = OpenAIServer(args.host, args.port, delay=args.delay, stream_delay=args.stream_delay)
    server.start()
    print(server.base_url, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
