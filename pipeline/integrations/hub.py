"""``hub.push=true``: upload the run's model/ (weights or adapter, tokenizer, model card) to the Hugging Face Hub.

The token is read from the environment only (HF_TOKEN) and passed to huggingface_hub calls; it is never written
to a file, the config, the card or a log. ``check`` runs before any heavy work so an offline machine, a missing
token or repo id, an invalid token, or ``hub.private=true`` for an existing public repository fails in one line
before training, not after it. A push that fails after training leaves the run completed with model/ intact and
prints the command that retries the upload (``retry_command``).
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from pathlib import Path
from urllib.parse import urlparse

from huggingface_hub import HfApi
from huggingface_hub.errors import RepositoryNotFoundError

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
    try:
        HfApi(endpoint=_endpoint()).whoami(token=_token())  # the token is valid (fails now, not after training)
    except Exception as e:
        status = getattr(getattr(e, "response", None), "status_code", None)
        why = "HF_TOKEN is not a valid token" if status == 401 else \
            f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
        raise ConfigError(f"hub.push=true but the Hub refused the check ({why}); {later}") from e
    _check_visibility(cfg, later)


def _check_visibility(cfg, later: str) -> None:
    """hub.private=true (the default) and the repository already exists as a public one: the push would publish the
    model. Refused before training."""
    hub = cfg.hub
    try:
        info = HfApi(endpoint=_endpoint()).repo_info(str(hub.repo_id), token=_token())
    except RepositoryNotFoundError:
        return  # created private at the end of the run
    except Exception as e:
        raise ConfigError(f"hub.push=true but the Hub did not say whether {hub.repo_id} exists "
                          f"({type(e).__name__}: {str(e).splitlines()[0][:160]}); {later}") from e
    if hub.get("private", True) and info.private is False:
        raise ConfigError(f"hub.private=true but {hub.repo_id} exists and is public: the push would publish this "
                          f"model; push to it with hub.private=false, or give another hub.repo_id")


def retry_command(cfg, run_dir: Path) -> str:
    private = " --private" if (cfg.get("hub") or {}).get("private", True) else ""
    return f"hf upload {cfg.hub.repo_id} {Path(run_dir) / 'model'} .{private}"


def push(cfg, run_dir: Path) -> str | None:
    """Create the (private by default) repo if needed and upload model/. Returns the repo URL."""
    hub = cfg.get("hub") or {}
    if not hub.get("push"):
        return None
    api = HfApi(endpoint=_endpoint(), token=_token())
    repo = api.create_repo(str(hub.repo_id), private=bool(hub.get("private", True)), exist_ok=True)
    api.upload_folder(repo_id=str(hub.repo_id), folder_path=str(Path(run_dir) / "model"),
                      commit_message=f"finetune: {cfg.name} ({cfg.task.name}, {cfg.method.name})")
    return str(repo)


def push_or_explain(cfg, run_dir: Path) -> dict:
    """``push``; a failure (network, permissions, quota) does not undo the finished run: one line on stderr with
    the command that retries the upload. Returns hub_url or hub_push_error for metrics.json."""
    try:
        url = push(cfg, run_dir)
    except Exception as e:
        why = f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"
        token = _token()
        if token:
            why = why.replace(token, "<HF_TOKEN>")
        line = (f"hub push failed ({why}); the run is complete and {Path(run_dir) / 'model'} is intact; retry the "
                f"upload with: {retry_command(cfg, run_dir)}")
        logging.getLogger("pipeline").warning(line)
        print(f"warning: {line}", file=sys.stderr)
        return {"hub_push_error": why}
    return {"hub_url": url} if url else {}
