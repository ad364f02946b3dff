"""`muxserve serve`: the OpenAI-compatible multi-model server."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from muxserve.server.config import API_KEY_ENV, BACKENDS, DTYPES, MODES


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "serve", help="serve models over an OpenAI-compatible HTTP API",
        description="Serve the models of CONFIG (default: smollm2-135m and gemma3-270m in "
                    "muxserve mode) at /v1/completions, /v1/chat/completions and /v1/models.")
    p.add_argument("config", nargs="?", default=None, help="a serve config YAML (optional)")
    p.add_argument("--host", default=None, help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (default 8000; 0 = any free)")
    p.add_argument("--api-key", default=None,
                   help=f"require 'Authorization: Bearer KEY' on /v1 (or ${API_KEY_ENV})")
    p.add_argument("--mode", choices=MODES, default=None, help="how models share the machine")
    p.add_argument("--dtype", choices=DTYPES, default=None)
    p.add_argument("--model", action="append", default=None, metavar="[NAME=]SOURCE",
                   help="serve this model instead of the config's (repeatable)")
    p.add_argument("--backend", choices=BACKENDS, default=None,
                   help="runtime (unit processes), inproc (one engine thread), auto")
    p.add_argument("--max-queue", type=int, default=None,
                   help="requests per model in the server at once; past it 429 (default 64)")
    p.add_argument("--request-timeout-s", type=float, default=None,
                   help="abort requests still running after this many seconds (default 300)")
    p.add_argument("--kv-pool-mib", type=int, default=None, help="KV cache pool size")
    p.add_argument("--log-level", default="info", help="uvicorn/muxserve log level")
    p.set_defaults(func=run)


def build_config(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from dataclasses import replace

    from muxserve.server.config import load_config, with_overrides

    cfg = load_config(args.config)
    top = {k: v for k, v in (("mode", args.mode), ("dtype", args.dtype),
                             ("backend", args.backend), ("kv_pool_mib", args.kv_pool_mib))
           if v is not None}
    if args.model:
        top["models"] = dict(_named(m) for m in args.model)
    if top:
        models = top.pop("models", None)
        cfg = replace(cfg, **top)
        if models is not None:
            cfg = replace(cfg, models=models, model_options={})
    api_key = args.api_key or os.environ.get(API_KEY_ENV) or None
    return with_overrides(cfg, host=args.host, port=args.port, api_key=api_key,
                          max_queue=args.max_queue, request_timeout_s=args.request_timeout_s)


def _named(spec: str) -> tuple[str, str]:
    name, sep, source = spec.partition("=")
    if sep and name and source and not name.startswith("random:"):
        return name, source
    return spec, spec


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(stream=sys.stderr, level=args.log_level.upper(),
                        format="%(levelname)s %(name)s: %(message)s")
    cfg = build_config(args)
    import uvicorn

    from muxserve.server.app import create_app
    from muxserve.server.factory import check_backend_config, make_backend

    check_backend_config(cfg)  # bad placement options fail now, not after the port is open
    failed: list[Exception] = []

    def stop(e: Exception) -> None:
        failed.append(e)
        server.should_exit = True

    app = create_app(cfg, load=lambda: make_backend(cfg), on_load_error=stop)
    server = uvicorn.Server(uvicorn.Config(app, host=cfg.server.host, port=cfg.server.port,
                                           log_level=args.log_level,
                                           timeout_graceful_shutdown=5))
    server.run()
    if failed:
        print(f"muxserve serve: error: loading the models failed: {failed[0]}", file=sys.stderr)
        return 2
    return 0
