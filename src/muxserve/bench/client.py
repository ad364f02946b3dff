"""One streamed completion over HTTP, timed: what the server did with one request.

Times are ``time.perf_counter()`` seconds; the runner turns them into seconds since the run
began. Every failure becomes an ``Outcome`` with an ``error`` kind, never an exception, so one
bad request cannot stop a run.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

import httpx

# error kinds, in the order the report lists them
ERROR_KINDS = ("http_429", "http_4xx", "http_5xx", "timeout", "connect", "disconnect",
               "stream_error", "incomplete_stream", "cancelled")


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one request got. first_token_s/finish_s are None unless it got there; a request
    with ``error`` set never counts as finished."""

    req_id: int
    model: str
    send_s: float
    first_token_s: float | None = None
    finish_s: float | None = None
    prompt_tokens: int | None = None  # the server's usage.prompt_tokens (None: not reported)
    output_tokens: int = 0  # usage.completion_tokens, else the number of non-empty chunks
    usage_reported: bool = False
    error: str | None = None  # one of ERROR_KINDS
    detail: str = ""  # status line or exception text, for the report's samples


def request_body(model: str, prompt: str, max_tokens: int, api: str = "completions"
                 ) -> dict[str, Any]:
    """The streamed body: a prompt (completions) or one user message (chat). ignore_eos makes
    vLLM generate exactly max_tokens; other servers ignore the unknown field."""
    body: dict[str, Any] = {"model": model, "max_tokens": max_tokens, "stream": True,
                            "stream_options": {"include_usage": True}, "ignore_eos": True}
    if api == "chat":
        body["messages"] = [{"role": "user", "content": prompt}]
    else:
        body["prompt"] = prompt
    return body


def _http_error(status: int) -> str:
    if status == 429:
        return "http_429"
    return "http_4xx" if 400 <= status < 500 else "http_5xx"


async def stream_completion(client: httpx.AsyncClient, url: str, req_id: int, model: str,
                            body: dict[str, Any], timeout_s: float) -> Outcome:
    """POST ``body`` with stream=true, read the server-sent events, time the first chunk with
    non-empty text (completions) or delta content (chat) and the end. ``timeout_s`` bounds
    the whole request, connect to [DONE]."""
    send = time.perf_counter()
    first: float | None = None
    chunks = 0
    usage: dict[str, Any] | None = None
    done = False
    try:
        async with asyncio.timeout(timeout_s), client.stream("POST", url, json=body) as resp:
            if resp.status_code >= 400:
                text = (await resp.aread()).decode(errors="replace")[:200]
                return Outcome(req_id, model, send, error=_http_error(resp.status_code),
                               detail=f"HTTP {resp.status_code}: {text}")
            async for line in resp.aiter_lines():
                if not line.startswith("data:"):
                    continue  # blank separators, comments, event: lines
                data = line[5:].strip()
                if data == "[DONE]":
                    done = True
                    break
                msg = json.loads(data)
                if "error" in msg:
                    return Outcome(req_id, model, send, first, error="stream_error",
                                   detail=str(msg["error"])[:200])
                for choice in msg.get("choices") or ():
                    # completions stream "text"; chat streams "delta": {"content"}
                    if choice.get("text") or (choice.get("delta") or {}).get("content"):
                        chunks += 1
                        if first is None:
                            first = time.perf_counter()
                if msg.get("usage"):
                    usage = msg["usage"]
    except TimeoutError:
        return Outcome(req_id, model, send, first, error="timeout", detail=f"> {timeout_s} s")
    except httpx.TimeoutException as e:
        return Outcome(req_id, model, send, first, error="timeout", detail=repr(e))
    except httpx.ConnectError as e:
        return Outcome(req_id, model, send, error="connect", detail=repr(e))
    except (httpx.TransportError, httpx.StreamError) as e:
        return Outcome(req_id, model, send, first, error="disconnect", detail=repr(e))
    except (json.JSONDecodeError, AttributeError, TypeError) as e:
        return Outcome(req_id, model, send, first, error="stream_error", detail=repr(e))
    end = time.perf_counter()
    if not done:
        return Outcome(req_id, model, send, first, error="incomplete_stream",
                       detail=f"stream ended without [DONE] after {chunks} chunks")
    completion = usage.get("completion_tokens") if usage else None
    prompt = usage.get("prompt_tokens") if usage else None
    return Outcome(req_id, model, send, first, end,
                   prompt_tokens=int(prompt) if prompt is not None else None,
                   output_tokens=int(completion) if completion is not None else chunks,
                   usage_reported=completion is not None)
