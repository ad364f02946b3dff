"""The official `openai` client, unchanged, against `muxserve serve` with no config (the real
smollm2-135m and gemma3-270m in muxserve mode): list, complete, chat, with and without
streaming; usage matches the tokens generated."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest
from server_helpers import Running, subprocess_server

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(900)]
MODELS = ["smollm2-135m", "gemma3-270m"]
N = 8  # tokens per answer: ignore_eos makes the count exact


@pytest.fixture(scope="module")
def server() -> Iterator[Running]:
    with subprocess_server([], startup_s=600, env={"MUXSERVE_API_KEY": "k-test"}) as s:
        yield s


@pytest.fixture(scope="module")
def client(server: Running) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="k-test", max_retries=0,
                         timeout=120)


def test_lists_both_models_and_needs_the_key(server: Running, client: openai.OpenAI) -> None:
    assert sorted(m.id for m in client.models.list()) == sorted(MODELS)
    bad = openai.OpenAI(base_url=f"{server.url}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    with pytest.raises(openai.NotFoundError) as e:
        client.completions.create(model="gpt-4", prompt="hi")
    assert "smollm2-135m" in str(e.value)


@pytest.mark.parametrize("model", MODELS)
def test_completion_stream_and_not(client: openai.OpenAI, model: str) -> None:
    kw = dict(model=model, prompt="The capital of France is", max_tokens=N, temperature=0,
              extra_body={"ignore_eos": True})
    out = client.completions.create(**kw)  # type: ignore[call-overload]
    assert out.choices[0].finish_reason == "length" and out.choices[0].text
    assert out.usage is not None and out.usage.completion_tokens == N
    assert out.usage.total_tokens == out.usage.prompt_tokens + N
    stream = client.completions.create(**kw, stream=True,  # type: ignore[call-overload]
                                       stream_options={"include_usage": True})
    chunks = list(stream)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == out.choices[0].text
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.model_dump() == out.usage.model_dump()


@pytest.mark.parametrize("model", MODELS)
def test_chat_stream_and_not(client: openai.OpenAI, model: str) -> None:
    kw = dict(model=model, messages=[{"role": "user", "content": "Say hello."}], max_tokens=N,
              temperature=0, extra_body={"ignore_eos": True})
    out = client.chat.completions.create(**kw)  # type: ignore[call-overload]
    msg = out.choices[0].message
    assert msg.role == "assistant" and msg.content
    assert out.usage is not None and out.usage.completion_tokens == N
    stream = client.chat.completions.create(**kw, stream=True,  # type: ignore[call-overload]
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == msg.content
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == N
    finish = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finish[-1] == "length"


def test_usage_counts_the_tokens_of_a_natural_stop(client: openai.OpenAI) -> None:
    out = client.chat.completions.create(
        model="gemma3-270m", messages=[{"role": "user", "content": "Reply with one word: yes"}],
        max_tokens=40, temperature=0)
    assert out.usage is not None
    assert 1 <= out.usage.completion_tokens <= 40
    if out.choices[0].finish_reason == "length":
        assert out.usage.completion_tokens == 40
