"""``hub.push=true``: upload the run's model/ (weights or adapter, tokenizer, model card) to the Hugging Face Hub.

The token is read from the environment only (HF_TOKEN) and passed to huggingface_hub calls; it is never written
to a file, the config, the card or a log. ``check`` runs before any heavy work so an offline machine, a missing
token or repo id fails in one line before training, not after it.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from pipeline.errors import ConfigError


def _token() -> str | None:
    return os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")


def _endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def check(cfg) -> None:
    hub = cfg.get("hub") or {}
    if not hub.get("push"):
        return
    if not hub.get("repo_id"):
        raise ConfigError("hub.push=true needs hub.repo_id=<user or org>/<name>")
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise ConfigError("hub.push=true but HF_HUB_OFFLINE=1: the Hub cannot be reached; unset HF_HUB_OFFLINE "
                          "on a machine with network, or set hub.push=false")
    if not _token():
        raise ConfigError("hub.push=true needs a write token in the environment: export HF_TOKEN=hf_... "
                          "(it is read from the environment only, never stored)")
    url = urlparse(_endpoint())
    later = f"push later with: hf upload {hub.repo_id} <run>/model, or set hub.push=false"
    if not any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        try:  # a quick probe: a dropped connection would otherwise hang the HTTP client for a long time
            port = url.port or (443 if url.scheme == "https" else 80)
            socket.create_connection((url.hostname, port), timeout=5).close()
        except OSError as e:
            raise ConfigError(f"hub.push=true but {url.hostname} is unreachable ({type(e).__name__}: {e}); "
                              f"{later}") from e
    from huggingface_hub import HfApi

    try:
        HfApi(endpoint=_endpoint()).whoami(token=_token())  # the token is valid (fails now, not after training)
    except Exception as e:
        status = getattr(getattr(e, "response", None), "status_code", None)
        why = "HF_TOKEN is not a valid token" if status == 401 else \
            f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
        raise ConfigError(f"hub.push=true but the Hub refused the check ({why}); {later}") from e


def push(cfg, run_dir: Path) -> str | None:
    """Create the (private by default) repo if needed and upload model/. Returns the repo URL."""
    hub = cfg.get("hub") or {}
    if not hub.get("push"):
        return None
    from huggingface_hub import HfApi

    api = HfApi(endpoint=_endpoint(), token=_token())
    repo = api.create_repo(str(hub.repo_id), private=bool(hub.get("private", True)), exist_ok=True)
    api.upload_folder(repo_id=str(hub.repo_id), folder_path=str(Path(run_dir) / "model"),
                      commit_message=f"finetune: {cfg.name} ({cfg.task.name}, {cfg.method.name})")
    return str(repo)
