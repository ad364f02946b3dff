"""`muxserve bench` (the load generator) against the server: every request succeeds and gets
exactly the tokens it asked for."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from server_helpers import TINY, thread_server

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(300)]


def test_bench_against_serve(tmp_path: Path) -> None:
    # a longer context: bench's synthetic prompts are words, the byte tokenizer ~5 ids a word
    models = {k: v.replace("max_context=64", "max_context=512") for k, v in TINY.items()}
    with thread_server(models, num_blocks=2000) as s:
        r = subprocess.run(
            [str(Path(sys.executable).parent / "muxserve"), "bench", "--base-url", s.url,
             "--model-rates", "tiny-llama=4,tiny-gemma=2", "--lengths", "fixed:16,16",
             "--duration-s", "4", "--seed", "1", "-o", str(tmp_path / "r.json"), "--quiet",
             "--save-requests", str(tmp_path / "r.jsonl")],
            capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert rows and {row["model"] for row in rows} == set(TINY)
    assert all(row["error"] is None for row in rows), [row["detail"] for row in rows][:3]
    assert all(row["output_tokens"] == 16 for row in rows)
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["num_finished"] == result["num_requests"] == len(rows)
