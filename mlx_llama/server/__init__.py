"""`mlx-llama serve`: an OpenAI-compatible HTTP server with continuous batching and a prompt cache.

Needs the `serve` extra (starlette, uvicorn), imported only when a server starts.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
from collections.abc import Sequence

from ..errors import MlxLlamaError

DEFAULT_PROMPT_CACHE_BYTES = 1 << 30


def _uvicorn():
    try:
        import starlette  # noqa: F401
        import uvicorn
    except ImportError as e:
        raise MlxLlamaError(f"the server needs the 'serve' extra: pip install 'mlx-llama[serve]' ({e})") from None
    return uvicorn


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise MlxLlamaError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def _load(model, tokenizer, dtype, quiet: bool, parallel: str | None = None):
    from ..loading import DEMO_MODEL, load

    if model is not None and not isinstance(model, (str, os.PathLike)):
        if tokenizer is None:
            raise MlxLlamaError("serve(model=<a loaded model>) also needs tokenizer=")
        return model, tokenizer, getattr(model, "name_or_path", None) or "mlx-llama"
    if model is None:
        if not quiet:
            print(
                "Serving the bundled demo model (a tiny Llama trained on a small English text); pass --model "
                "for a real one.",
                file=sys.stderr,
            )
        m, t = load(DEMO_MODEL, dtype=dtype, parallel=parallel)
        return m, t, "mlx-llama-demo"
    m, t = load(model, dtype=dtype, parallel=parallel)
    return m, t, str(model).rstrip("/").split("/")[-1] if os.path.isdir(str(model)) else str(model)


def serve(
    model=None,
    tokenizer=None,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    dtype: str | None = None,
    max_concurrency: int = 8,
    prompt_cache_bytes: int = DEFAULT_PROMPT_CACHE_BYTES,
    api_key: str | None = None,
    cors_origins: Sequence[str] | None = None,
    prefill_step_size: int = 512,
    model_id: str | None = None,
    quiet: bool = False,
    parallel: str | None = None,
) -> None:
    """Serve a model (a path or Hub id, the demo model when None, or a loaded model plus tokenizer) until
    SIGINT/SIGTERM. Blocks; returns normally after a signal-driven shutdown. With `parallel="tensor"` (under
    mlx.launch) rank 0 serves HTTP and the other ranks compute along (see mlx_llama.parallel_serve).
    """
    uvicorn = _uvicorn()
    _check_settings(max_concurrency, prefill_step_size, port)
    from ..parallel_serve import is_follower, make_scheduler
    from .app import ServerState, create_app

    options = dict(
        max_concurrency=max_concurrency, prompt_cache_bytes=prompt_cache_bytes, prefill_step_size=prefill_step_size
    )
    if is_follower(parallel):  # no HTTP here: run rank 0's scheduler steps until it stops
        model, tokenizer, _ = _load(model, tokenizer, dtype, True, parallel)
        return make_scheduler(model, tokenizer, parallel, **options).run_until(lambda: False)
    sock = _listen(host, port)
    try:
        model, tokenizer, name = _load(model, tokenizer, dtype, quiet, parallel)
        scheduler = make_scheduler(model, tokenizer, parallel, **options)
    except BaseException:
        sock.close()
        raise
    state = ServerState(scheduler, tokenizer, model_id or name, api_key=api_key)
    app = create_app(state, list(cors_origins or []))
    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=2, lifespan="off")
    server = _server_class(uvicorn)(config)
    _run(
        server,
        scheduler,
        sock,
        f"{state.model_id} on http://{host}:{sock.getsockname()[1]}/v1 (max concurrency {max_concurrency})",
        quiet,
    )


def _check_settings(max_concurrency: int, prefill_step_size: int, port: int) -> None:
    if max_concurrency < 1:
        raise MlxLlamaError(f"max_concurrency must be at least 1, got {max_concurrency}")
    if prefill_step_size < 1:
        raise MlxLlamaError(f"prefill_step_size must be at least 1, got {prefill_step_size}")
    if not 0 <= port <= 65535:
        raise MlxLlamaError(f"port must be in 0..65535, got {port}")


def _run(server, scheduler, sock, banner: str, quiet: bool) -> None:
    """HTTP on a side thread, decoding on this (the main) thread, until SIGINT/SIGTERM shut the HTTP side down."""
    http = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="mlx-llama-http", daemon=True)

    def stop(sig, frame) -> None:
        if server.should_exit and sig == signal.SIGINT:
            server.force_exit = True  # a second Ctrl-C: do not wait for open requests
        server.should_exit = True

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        http.start()
        if not quiet:
            print(f"mlx-llama serve: {banner}; Ctrl-C stops", file=sys.stderr, flush=True)
        # MLX stays on this (the main) thread: decoding goes on until the HTTP side has shut down.
        scheduler.run_until(lambda: not http.is_alive())
    finally:
        server.should_exit = True
        http.join(10)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sock.close()


def _server_class(uvicorn):
    class Server(uvicorn.Server):
        """uvicorn's server on a side thread: the main thread handles the signals (a stop exits 0)."""

        def install_signal_handlers(self) -> None:  # (older uvicorn) not on this thread
            pass

    return Server


__all__ = ["serve"]
