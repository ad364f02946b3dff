"""`muxserve generate` in a real subprocess: stdout is only the completion; bad input exits 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

from muxserve.engine.llm import MultiModelLLM
from muxserve.engine.request import GenerationRequest
from muxserve.types import SamplingParams

RANDOM = ("random:smollm2-135m?num_layers=2&hidden_size=64&num_heads=4&num_kv_heads=2"
          "&intermediate_size=128&vocab_size=300&max_context=64")
MAIN = "import sys; from muxserve.cli import main; sys.exit(main())"


def muxserve(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", MAIN, "generate", *args], capture_output=True,
                          text=True, timeout=300)


def test_prints_exactly_the_completion() -> None:
    res = muxserve("--model", RANDOM, "--prompt", "Hello", "--max-tokens", "7")
    assert res.returncode == 0, res.stderr
    llm = MultiModelLLM([RANDOM], num_blocks=64)
    params = SamplingParams(max_tokens=7, temperature=0.0)
    [out] = llm.generate([GenerationRequest(RANDOM, "Hello", params)])
    assert res.stdout == out.text + "\n"
    assert res.stderr == ""


def test_seeded_sampling_is_reproducible() -> None:
    args = ("--model", RANDOM, "--prompt", "Hi", "--temperature", "1.0", "--top-k", "50",
            "--top-p", "0.9", "--seed", "3", "--max-tokens", "10", "--dtype", "bfloat16")
    a, b = muxserve(*args), muxserve(*args)
    assert a.returncode == 0 and a.stdout == b.stdout


@pytest.mark.parametrize("args, message", [
    (("--model", "nope", "--prompt", "hi"), "unknown model 'nope'; built-in models: "),
    (("--model", RANDOM, "--prompt", "hi", "--temperature", "-1"), "temperature must be in"),
    (("--model", RANDOM, "--prompt", "hi", "--top-p", "0"), "top_p must be in (0, 1]"),
    (("--model", RANDOM, "--prompt", "hi", "--dtype", "fp16"), "unknown --dtype 'fp16'"),
    (("--model", RANDOM, "--prompt", "x" * 80), "context window is 64 tokens"),
    (("--model", RANDOM, "--prompt", ""), "prompt is empty"),
    (("--model", "/no/such/model.gguf", "--prompt", "hi"), "/no/such/model.gguf"),
])
def test_bad_input_exits_2_with_one_line(args: tuple[str, ...], message: str) -> None:
    res = muxserve(*args)
    assert res.returncode == 2
    assert res.stdout == ""
    assert res.stderr.startswith("muxserve generate: error: ")
    assert message in res.stderr and res.stderr.count("\n") == 1


@pytest.mark.slow
def test_smollm2_greedy_answer_is_deterministic() -> None:
    args = ("--model", "smollm2-135m", "--prompt", "What is the capital of France?", "--chat",
            "--max-tokens", "8")
    a, b = muxserve(*args), muxserve(*args)
    assert a.returncode == 0, a.stderr
    assert a.stdout.strip() and a.stdout == b.stdout
    assert "Paris" in a.stdout
