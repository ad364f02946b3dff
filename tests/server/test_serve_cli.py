"""`muxserve serve` as a real process: it serves a config, and a model that cannot load makes
it exit 2 with the reason (instead of staying up and never ready)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from server_helpers import LLAMA, free_port, subprocess_server

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(300)]
MUXSERVE = str(Path(sys.executable).parent / "muxserve")


def test_unloadable_model_exits_2_with_the_reason() -> None:
    r = subprocess.run([MUXSERVE, "serve", "--model", "random:no-such-preset", "--backend",
                        "inproc", "--port", str(free_port())],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert "no-such-preset" in r.stderr and "loading the models failed" in r.stderr


def test_bad_flag_value_exits_2_before_loading() -> None:
    r = subprocess.run([MUXSERVE, "serve", "--max-queue", "0"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2 and "max_queue" in r.stderr


def test_serves_a_config_file(tmp_path: Path) -> None:
    path = tmp_path / "serve.yaml"
    path.write_text(f"models: {{tiny: '{LLAMA}'}}\nbackend: inproc\n")
    with subprocess_server([str(path)], startup_s=120) as s:
        assert [m["id"] for m in httpx.get(f"{s.url}/v1/models").json()["data"]] == ["tiny"]
        r = httpx.post(f"{s.url}/v1/completions", json={"model": "tiny", "prompt": "hi",
                                                         "max_tokens": 3}, timeout=30)
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] <= 3
