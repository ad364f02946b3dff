"""Where each model's requests go: ``--base-url URL`` and ``--base-url MODEL=URL`` pairs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

DEFAULT_KEY = "*"  # the URL for every model without its own pair
APIS = ("completions", "chat")  # /v1/completions, /v1/chat/completions


def _check_url(url: str, spec: str) -> str:
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"bad --base-url {spec!r}: the URL must start with http:// or https://")
    return url.rstrip("/")


def parse_base_urls(specs: Sequence[str]) -> dict[str, str]:
    """``URL`` sets the default, ``MODEL=URL`` one model's endpoint; returns {model or '*': url}.

    A spec is a pair only when the text after its first '=' is an http(s) URL, so a plain URL
    with '=' in a query string stays a URL.
    """
    if not specs:
        raise ValueError("give at least one --base-url URL or --base-url MODEL=URL")
    out: dict[str, str] = {}
    for spec in specs:
        model, sep, rest = spec.partition("=")
        key, url = (model, rest) if sep and rest.startswith(("http://", "https://")) else (
            DEFAULT_KEY, spec)
        if not key:
            raise ValueError(f"bad --base-url {spec!r}: empty model name before '='")
        if key in out:
            who = "the default" if key == DEFAULT_KEY else repr(key)
            raise ValueError(f"--base-url given twice for {who}: {out[key]!r} and {url!r}")
        out[key] = _check_url(url, spec)
    return out


def completions_url(base_url: str, api: str = "completions") -> str:
    """``http://h:p`` or ``http://h:p/v1`` -> ``http://h:p/v1/completions`` (or
    ``/v1/chat/completions`` for api "chat")."""
    if api not in APIS:
        raise ValueError(f"unknown api {api!r}; valid: {', '.join(APIS)}")
    base = base_url.rstrip("/")
    path = "chat/completions" if api == "chat" else "completions"
    return f"{base}/{path}" if base.endswith("/v1") else f"{base}/v1/{path}"


def models_url(base_url: str) -> str:
    """``http://h:p`` or ``http://h:p/v1`` -> ``http://h:p/v1/models``."""
    base = base_url.rstrip("/")
    return f"{base}/models" if base.endswith("/v1") else f"{base}/v1/models"


@dataclass(frozen=True)
class Targets:
    """Per workload model: the base URL and the model name sent in the request body."""

    base_url: Mapping[str, str]
    served_name: Mapping[str, str]
    api: str = "completions"

    def url(self, model: str) -> str:
        return completions_url(self.base_url[model], self.api)


def resolve_targets(models: Sequence[str], base_urls: Mapping[str, str],
                    served_names: Mapping[str, str] | None = None,
                    api: str = "completions") -> Targets:
    """Give every workload model a URL; unknown names in the maps are errors (typos)."""
    served_names = dict(served_names or {})
    unknown = sorted((set(base_urls) - {DEFAULT_KEY}) - set(models))
    unknown += sorted(set(served_names) - set(models))
    if unknown:
        raise ValueError(f"--base-url/--served-name name models {unknown} that are not in the "
                         f"workload; its models are {list(models)}")
    urls: dict[str, str] = {}
    for m in models:
        if m in base_urls:
            urls[m] = base_urls[m]
        elif DEFAULT_KEY in base_urls:
            urls[m] = base_urls[DEFAULT_KEY]
        else:
            raise ValueError(f"model {m!r} has no endpoint: add --base-url {m}=URL or a plain "
                             "--base-url URL for all models")
    if api not in APIS:
        raise ValueError(f"unknown api {api!r}; valid: {', '.join(APIS)}")
    return Targets(urls, {m: served_names.get(m, m) for m in models}, api)


def parse_pairs(text: str | Sequence[str] | None, flag: str) -> dict[str, str]:
    """``a=x,b=y`` (or repeated flags) -> {a: x, b: y}; a clear error naming the flag."""
    if not text:
        return {}
    items = [text] if isinstance(text, str) else list(text)
    out: dict[str, str] = {}
    for chunk in items:
        for part in chunk.split(","):
            k, sep, v = part.partition("=")
            if not sep or not k.strip() or not v.strip():
                raise ValueError(f"bad {flag} item {part!r}; expected NAME=VALUE")
            out[k.strip()] = v.strip()
    return out
