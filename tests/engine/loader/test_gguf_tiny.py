"""GGUF loading on tiny files written like llama.cpp's converter writes them (fast)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import torch
from tiny_gguf import q8_roundtrip, tiny_arch, tiny_weights, write_tiny_gguf

from muxserve.engine.loader import load_model, weight_shapes
from muxserve.engine.loader.cache import cache_root


@pytest.fixture(params=["llama", "gemma3"])
def family(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_weights_come_back_in_hf_layout(tmp_path: Path, family: str) -> None:
    arch = tiny_arch(family)
    ref = tiny_weights(arch)
    path = write_tiny_gguf(tmp_path / f"tiny-{family}.gguf", arch, ref)
    m = load_model(str(path), cache_dir=tmp_path / "cache")
    assert m.name == f"tiny-{family}"
    assert m.arch == arch.with_(name=m.name)
    assert set(m.weights) == set(weight_shapes(arch)) == set(ref)
    for name, w in m.weights.items():
        assert w.dtype == torch.float32
        if w.ndim == 2:  # quantized: Q8_0 rounding only; q/k rows back in HF order
            assert torch.equal(w, q8_roundtrip(ref[name])), name
        elif family == "gemma3":  # stored as w + 1, given back in HF's (1 + w) convention
            torch.testing.assert_close(w, ref[name], rtol=0, atol=1e-6)
        else:
            assert torch.equal(w, ref[name]), name


def test_llama_q_k_rows_are_unpermuted(tmp_path: Path) -> None:
    arch = tiny_arch("llama")
    ref = tiny_weights(arch)
    # rows whose values say which output row they are: any permutation error shows
    q = torch.arange(arch.num_heads * arch.head_dim, dtype=torch.float32)[:, None]
    ref["model.layers.0.self_attn.q_proj.weight"] = q.expand(-1, arch.hidden_size).contiguous()
    path = write_tiny_gguf(tmp_path / "perm.gguf", arch, ref)
    got = load_model(str(path), cache_dir=tmp_path)
    rows = got.weights["model.layers.0.self_attn.q_proj.weight"][:, 0]
    assert torch.allclose(rows, q[:, 0], atol=0.5)  # Q8_0 of a constant row is near-exact


def test_gemma3_arch_and_tokenizer_metadata(tmp_path: Path) -> None:
    arch = tiny_arch("gemma3")
    path = write_tiny_gguf(tmp_path / "g.gguf", arch, tiny_weights(arch))
    m = load_model(str(path), cache_dir=tmp_path)
    assert m.arch.sliding_window_pattern == 2  # from the per-layer bool array
    assert [m.arch.is_local_layer(i) for i in range(2)] == [True, False]
    assert m.arch.query_pre_attn_scalar == arch.head_dim
    tok = m.tokenizer
    assert tok.bos_token_id == 2 and tok.add_bos_token
    assert tok.eos_token_ids == {1, 5}  # <eos> and <end_of_turn>
    ids = tok.encode("hello world")
    assert ids[0] == 2 and tok.decode(ids) == "hello world"
    assert tok.backend.id_to_token(ids[1]) == "hello"
    # bytes without a piece fall back to <0x..> tokens and decode back
    assert tok.decode(tok.encode("héllo\n\nwé")) == "héllo\n\nwé"
    assert tok.encode("<start_of_turn>", add_special_tokens=False) == [4]
    assert tok.decode(tok.encode("<end_of_turn>hello")) == "hello"


def test_llama_tokenizer_metadata(tmp_path: Path) -> None:
    arch = tiny_arch("llama")
    path = write_tiny_gguf(tmp_path / "l.gguf", arch, tiny_weights(arch), chat_template="X")
    tok = load_model(str(path), cache_dir=tmp_path).tokenizer
    assert tok.bos_token_id == 1 and not tok.add_bos_token
    assert tok.eos_token_ids == {0, 2}  # <|im_end|> and <|endoftext|>
    ids = tok.encode(" the 42")
    assert ids[0] == 261  # the merges "Ġ t", "h e", "Ġt he" make "Ġthe"
    assert tok.decode(ids) == " the 42"
    assert tok.chat_template == "X"


def test_cache_hit_reuse_and_invalidation(tmp_path: Path) -> None:
    arch = tiny_arch("llama")
    path = write_tiny_gguf(tmp_path / "c.gguf", arch, tiny_weights(arch))
    cache = tmp_path / "cache"
    first = load_model(str(path), cache_dir=cache)
    entries = list((cache / "models").iterdir())
    assert len(entries) == 1
    assert {p.name for p in entries[0].iterdir()} == {
        "weights.safetensors", "arch.json", "tokenizer.json", "muxserve_tokenizer.json"}
    second = load_model(str(path), cache_dir=cache)
    assert all(torch.equal(first.weights[k], second.weights[k]) for k in first.weights)
    assert second.arch == first.arch
    assert second.tokenizer.encode("the") == first.tokenizer.encode("the")
    # a damaged entry is rebuilt, not trusted
    (entries[0] / "weights.safetensors").write_bytes(b"garbage")
    third = load_model(str(path), cache_dir=cache)
    assert all(torch.equal(first.weights[k], third.weights[k]) for k in first.weights)
    # a changed file (new mtime) gets a new entry
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    load_model(str(path), cache_dir=cache)
    assert len([p for p in (cache / "models").iterdir() if not p.name.startswith(".")]) == 2
    assert not [p for p in (cache / "models").iterdir() if p.name.startswith(".tmp")]


def test_cache_location_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MUXSERVE_CACHE_DIR", str(tmp_path / "envcache"))
    assert cache_root() == tmp_path / "envcache"
    assert cache_root(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv("MUXSERVE_CACHE_DIR")
    assert cache_root() == Path.home() / ".cache" / "muxserve"
    arch = tiny_arch("llama")
    path = write_tiny_gguf(tmp_path / "e.gguf", arch, tiny_weights(arch))
    monkeypatch.setenv("MUXSERVE_CACHE_DIR", str(tmp_path / "envcache"))
    load_model(str(path))
    assert len(list((tmp_path / "envcache" / "models").iterdir())) == 1


def test_requested_dtype(tmp_path: Path) -> None:
    arch = tiny_arch("gemma3")
    path = write_tiny_gguf(tmp_path / "d.gguf", arch, tiny_weights(arch))
    fp32 = load_model(str(path), cache_dir=tmp_path)
    bf16 = load_model(str(path), dtype=torch.bfloat16, cache_dir=tmp_path)
    for k, w in bf16.weights.items():
        assert w.dtype == torch.bfloat16
        assert torch.equal(w, fp32.weights[k].to(torch.bfloat16))


def test_unreadable_cache_dir_still_loads(tmp_path: Path) -> None:
    arch = tiny_arch("llama")
    path = write_tiny_gguf(tmp_path / "u.gguf", arch, tiny_weights(arch))
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    t0 = time.perf_counter()
    m = load_model(str(path), cache_dir=blocker)  # cache write fails: warning, model loads
    assert m.arch.num_layers == arch.num_layers and time.perf_counter() - t0 < 30


def test_fast_reader_agrees_with_gguf_reader(tmp_path: Path, family: str) -> None:
    import gguf
    import numpy as np

    from muxserve.engine.loader.gguf_format import read_gguf

    arch = tiny_arch(family)
    path = write_tiny_gguf(tmp_path / "r.gguf", arch, tiny_weights(arch), chat_template="T")
    ours, ref = read_gguf(path), gguf.GGUFReader(path)
    assert list(ours.fields) == [k for k in ref.fields if not k.startswith("GGUF.")]
    for key, value in ours.fields.items():
        want = ref.fields[key].contents()
        if isinstance(value, float):
            assert value == pytest.approx(want, rel=1e-7), key
        else:
            assert np.array_equal(np.asarray(value), np.asarray(want)), key
    assert [t.name for t in ours.tensors] == [t.name for t in ref.tensors]
    for a, b in zip(ours.tensors, ref.tensors, strict=True):
        assert a.tensor_type == b.tensor_type and a.data.dtype == b.data.dtype
        assert np.array_equal(a.data, b.data), a.name


@pytest.mark.parametrize("variant", ["gpt2", "gemma3", "sentencepiece"])
def test_tiny_tokenizers_match_transformers(tmp_path: Path, variant: str) -> None:
    from tiny_gguf import SP_VOCAB
    from transformers import AutoTokenizer

    arch = tiny_arch("gemma3" if variant == "gemma3" else "llama")
    if variant == "sentencepiece":
        arch = arch.with_(vocab_size=SP_VOCAB)
    path = write_tiny_gguf(tmp_path / f"{variant}.gguf", arch, tiny_weights(arch),
                           sentencepiece=variant == "sentencepiece")
    ours = load_model(path, cache_dir=tmp_path / "cache").tokenizer
    theirs = AutoTokenizer.from_pretrained(str(tmp_path), gguf_file=path.name)
    for text in ["hello world", " hello  world ", "héllo\n\nworld\t!", "", "  ", "the 42",
                 "日本🤖"]:
        ids = ours.encode(text)
        assert ids == theirs(text)["input_ids"], text
        assert ours.decode(ids) == theirs.decode(ids, skip_special_tokens=True), text
        # streaming after a prompt gives what decoding the whole output gives
        out = ours.encode(text, add_special_tokens=False)
        d = ours.new_detokenizer(ours.encode("hello"))
        assert "".join([*(d.push(i) for i in out), d.flush()]) == \
            ours.decode(ours.encode("hello") + out)[len(ours.decode(ours.encode("hello"))):]
