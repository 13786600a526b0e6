"""Push a finished run to the Hugging Face Hub.

Every config of ``DIR/dataset`` goes up with ``Dataset.push_to_hub`` (split ``train``, one commit per config,
``triplets`` the default config); then the run's card ``DIR/README.md`` becomes the repo's README.md, its
front matter merged with the ``configs`` / ``dataset_info`` that push_to_hub wrote; then ``DIR/push.json``
records what was pushed. push.json is written only after every config and the card succeeded, so it never
claims a partial push; a failure names the configs that did reach the Hub.

The token comes from the argument, else ``huggingface_hub.get_token()`` (``HF_TOKEN`` or ``hf auth login``).
It is never logged, printed or recorded; error messages are scrubbed of it.

Every Hub call has a deadline (``SYNTH_HUB_TIMEOUT`` seconds from its start, default 60, plus time for
what it uploads): huggingface_hub's own client waits forever on a server that accepts a connection and never
answers, and its timeouts are per read, which a server trickling a byte at a time never trips. A call that
runs out is not retried (a silent server stays silent): the push stops with exit 3, naming the call. Every
reply is at most ``SYNTH_MAX_REPLY_BYTES`` (``synth.core.bounded_http``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from synth.core.bounded_http import BoundedTransport, CallTimeout, ReplyTooLarge
from synth.core.errors import ResumableFailure, UserError
from synth.core.files import atomic_write_json
from synth.core.limits import limit, over_limit

DEFAULT_CONFIG = "triplets"
RUN_FILES = ("dataset", "README.md", "report.json")
# Front-matter keys that describe the pushed data files: the Hub's copy (written by push_to_hub) wins.
HUB_OWNED_METADATA = ("configs", "dataset_info")
LOGIN_HINT = "log in with `hf auth login` or set HF_TOKEN to a token with write access"

# A Hub call that passed its deadline (not an httpx timeout: huggingface_hub would retry it with backoff).
HubTimeout = CallTimeout


@dataclass
class RunContents:
    configs: dict  # config name -> datasets.Dataset
    card_text: str
    card_metadata: dict


def push_run(
    run_dir: Path, repo: str, *, private: bool = False, configs: list[str] | None = None, token: str | None = None
) -> dict:
    """Push ``configs`` (default: all) of the run in ``run_dir`` and its card to the dataset repo ``repo``.

    Returns (and writes to ``run_dir/push.json``) the repo, its URL, each config's rows and commit, and the
    card's commit. ``private`` applies when the repo is created; an existing repo keeps its visibility.
    """
    run_dir = Path(run_dir)
    contents = load_run(run_dir)
    names = select_configs(contents.configs, configs)
    check_repo_id(repo)
    token = resolve_token(token)

    from huggingface_hub import HfApi, constants

    if constants.is_offline_mode():
        raise UserError(
            "the Hugging Face Hub is in offline mode (HF_HUB_OFFLINE=1): pushing needs the network; "
            "unset HF_HUB_OFFLINE"
        )
    api = HfApi(token=token)
    pushed: list[dict] = []
    stage = "checking the token"
    calls: dict = {"last": None}
    limit = hub_timeout()
    try:
        with _quiet_libraries(), _bounded_calls(limit, calls):
            api.whoami()
            for name in names:
                stage = f"pushing config '{name}'"
                commit = contents.configs[name].push_to_hub(
                    repo,
                    config_name=name,
                    split="train",
                    private=private,
                    token=token,
                    set_default=True if name == DEFAULT_CONFIG else None,
                )
                pushed.append(
                    {
                        "name": name,
                        "rows": contents.configs[name].num_rows,
                        "commit": commit.oid,
                        "commit_url": commit.commit_url,
                    }
                )
            stage = "uploading the dataset card"
            card = merged_card(contents, _hub_card_text(repo, pushed[-1]["commit"], token))
            card_commit = api.upload_file(
                path_or_fileobj=card.encode(),
                path_in_repo="README.md",
                repo_id=repo,
                repo_type="dataset",
                commit_message="Update dataset card (synth)",
                parent_commit=pushed[-1]["commit"],
            )
    except Exception as e:  # noqa: BLE001 - translated into one line, or re-raised when not a Hub failure
        failure = _hub_failure(
            e,
            stage=stage,
            repo=repo,
            pushed=[p["name"] for p in pushed],
            token=token,
            endpoint=api.endpoint,
            last_call=calls["last"],
        )
        if failure is None:
            raise
        raise failure from None

    record = {
        "repo": repo,
        "url": f"{api.endpoint}/datasets/{repo}",
        "endpoint": api.endpoint,
        "private_requested": private,
        "configs": pushed,
        "card": {"commit": card_commit.oid, "commit_url": card_commit.commit_url},
        "pushed_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    atomic_write_json(run_dir / "push.json", record)
    return record


def load_run(run_dir: Path) -> RunContents:
    """The configs and card of a synth run folder; a UserError naming the missing or broken file otherwise."""
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: not a folder (expected a synth run: dataset/, README.md, report.json)")
    for name in RUN_FILES:
        if not (run_dir / name).exists():
            raise UserError(f"{run_dir}: not a synth run: {name} is missing")
    try:
        json.loads((run_dir / "report.json").read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise UserError(f"{run_dir / 'report.json'}: not valid JSON ({e})") from None

    import datasets

    try:
        loaded = datasets.load_from_disk(str(run_dir / "dataset"))
    except (OSError, ValueError) as e:
        raise UserError(f"{run_dir / 'dataset'}: not a saved dataset ({_first_line(e)})") from None
    # Older runs saved one Dataset: it is the training rows.
    configs = {DEFAULT_CONFIG: loaded} if isinstance(loaded, datasets.Dataset) else dict(loaded)

    from huggingface_hub import DatasetCard

    card_path = run_dir / "README.md"
    try:
        card = DatasetCard(card_path.read_text(encoding="utf-8"))
    except Exception as e:  # noqa: BLE001 - yaml raises several types; all mean a broken front matter
        raise UserError(f"{card_path}: the YAML front matter does not parse ({_first_line(e)})") from None
    metadata = card.data.to_dict()
    if not metadata.get("license"):
        raise UserError(f"{card_path}: the front matter has no `license` (expected e.g. `license: cc-by-4.0`)")
    return RunContents(configs=configs, card_text=card.text, card_metadata=metadata)


def select_configs(available: dict, requested: list[str] | None) -> list[str]:
    """The configs to push, ``triplets`` first; unknown names are a UserError listing the available ones."""
    if not available:
        raise UserError("the run's dataset has no configs: nothing to push")
    names = list(dict.fromkeys(requested)) if requested else list(available)
    unknown = [n for n in names if n not in available]
    if unknown:
        raise UserError(f"--config {unknown[0]}: no such config in this run; available: {', '.join(available)}")
    return sorted(names, key=lambda n: n != DEFAULT_CONFIG)


def check_repo_id(repo: str) -> None:
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo)
    except HFValidationError:
        raise UserError(
            f"--repo {repo!r}: not a valid repo id (expected owner/name: letters, digits, '-', '_', "
            "'.', at most 96 characters)"
        ) from None
    if repo.count("/") != 1 or repo.startswith("buckets/"):
        raise UserError(f"--repo {repo!r}: expected owner/name, e.g. my-user/my-dataset")


def resolve_token(token: str | None) -> str:
    from huggingface_hub import get_token

    token = token or get_token()
    if not token:
        raise UserError(f"no Hugging Face token: {LOGIN_HINT}")
    return token


def merged_card(contents: RunContents, hub_card_text: str | None) -> str:
    """The run's card with the Hub's ``configs``/``dataset_info`` in its front matter; every other key is the
    run's (a key only the Hub's card has, e.g. one added on the website, is kept)."""
    from huggingface_hub import DatasetCard, DatasetCardData

    hub_metadata = DatasetCard(hub_card_text).data.to_dict() if hub_card_text else {}
    metadata = {**hub_metadata, **contents.card_metadata}
    metadata.update({k: hub_metadata[k] for k in HUB_OWNED_METADATA if k in hub_metadata})
    # The layout RepoCard.__str__ writes; DatasetCardData drops None values and keeps unknown keys.
    return f"---\n{DatasetCardData(**metadata).to_yaml()}\n---\n{contents.card_text}"


def _hub_card_text(repo: str, revision: str, token: str) -> str | None:
    """README.md as push_to_hub left it, read at that commit (not at main, which may have moved)."""
    from huggingface_hub import HfFileSystem

    path = f"datasets/{repo}@{revision}/README.md"
    fs = HfFileSystem(token=token, skip_instance_cache=True)
    return fs.read_text(path, encoding="utf-8") if fs.exists(path) else None


def _hub_failure(
    error: BaseException,
    *,
    stage: str,
    repo: str,
    pushed: list[str],
    token: str,
    endpoint: str,
    last_call: str | None = None,
) -> UserError | None:
    """One line for a failed push, or None when ``error`` is not about the Hub (a bug: let it raise)."""
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    try:
        from httpx2 import TransportError  # huggingface_hub's HTTP client
    except ImportError:  # pragma: no cover - older huggingface_hub
        TransportError = OSError  # noqa: N806

    done = f"; configs already on the Hub: {', '.join(pushed)}" if pushed else "; no config reached the Hub"
    done += "; push.json not written"
    chain = _exception_chain(error)
    big = next((e for e in chain if isinstance(e, ReplyTooLarge)), None)
    if big is not None:
        line = str(over_limit("max_reply_bytes", f"the Hub at {endpoint}: reply to {big.call}", big.got))
        return UserError(_scrub(f"{line}; while {stage}{done}", token))
    timeout = next((e for e in chain if isinstance(e, HubTimeout)), None)
    if timeout is not None:
        return ResumableFailure(
            _scrub(
                f"the Hub at {endpoint} did not answer {timeout.call} within {round(timeout.seconds, 1):g}s "
                f"while {stage}{done}; run the same command again (SYNTH_HUB_TIMEOUT sets "
                "the limit)",
                token,
            )
        )
    http = next((e for e in chain if isinstance(e, HfHubHTTPError) and e.response is not None), None)
    if http is not None:
        status = http.response.status_code
        if status == 401:
            message = f"the Hub rejected the token (HTTP 401) while {stage}: it is invalid or expired; {LOGIN_HINT}"
        elif status == 403:
            message = (
                f"the token may not write to {repo} (HTTP 403) while {stage}: use a token with write "
                f"access to the '{repo.split('/')[0]}' namespace"
            )
        elif status >= 500:
            return ResumableFailure(
                _scrub(f"the Hub failed (HTTP {status}) while {stage}{done}; run the same command again", token)
            )
        else:
            detail = _first_line(http.server_message or http)[:200]
            message = f"the Hub answered HTTP {status} while {stage}: {detail}"
        return UserError(_scrub(message + done, token))
    if any(isinstance(e, OfflineModeIsEnabled) for e in chain):
        return UserError(f"the Hugging Face Hub is in offline mode (HF_HUB_OFFLINE=1) while {stage}{done}")
    transport = next((e for e in chain if isinstance(e, TransportError)), None)
    if transport is not None:
        return ResumableFailure(
            _scrub(
                f"cannot reach the Hub at {endpoint} while {stage} "
                f"({type(transport).__name__}){done}; run the same command again",
                token,
            )
        )
    odd = next((e for e in chain if isinstance(e, (KeyError, json.JSONDecodeError))), None)
    if odd is not None:  # a reply without the fields huggingface_hub reads: not a Hub, or a changed API
        what = f"missing key {odd.args[0]!r}" if isinstance(odd, KeyError) else f"not JSON ({odd.msg})"
        return UserError(
            _scrub(
                f"unexpected reply from the Hub at {endpoint} to {last_call or 'a call'} while "
                f"{stage}: {what}{done}; is HF_ENDPOINT a Hugging Face Hub?",
                token,
            )
        )
    if isinstance(error, ValueError):  # datasets refusing the repo's state, e.g. features that differ
        return UserError(_scrub(f"{stage} to {repo} failed: {_first_line(error)[:300]}{done}", token))
    return None


def hub_timeout() -> float:
    """SYNTH_HUB_TIMEOUT: a finite number of seconds > 0 (``inf`` is refused with one line)."""
    return limit("hub_timeout")


@contextlib.contextmanager
def _bounded_calls(seconds: float, calls: dict):
    """huggingface_hub's shared HTTP client, with every call ending within ``seconds`` of its start (also
    calls that pass ``timeout=None``), each reply bounded, and the last call recorded in ``calls["last"]``
    for error messages."""
    import httpx2
    from huggingface_hub.utils import _http as hub_http

    max_bytes = limit("max_reply_bytes")

    class Transport(BoundedTransport):
        def handle_request(self, request):
            calls["last"] = f"{request.method} {request.url.path}"
            return super().handle_request(request)

    def factory():  # huggingface_hub's default_client_factory, with the bounded transport
        return httpx2.Client(
            transport=Transport(seconds, max_bytes),
            event_hooks={"request": [hub_http.hf_request_event_hook]},
            follow_redirects=True,
            timeout=httpx2.Timeout(seconds),
        )

    previous = getattr(hub_http, "_GLOBAL_CLIENT_FACTORY", hub_http.default_client_factory)
    hub_http.set_client_factory(factory)
    try:
        yield calls
    finally:
        hub_http.set_client_factory(previous)


def _exception_chain(error: BaseException) -> list[BaseException]:
    chain, seen = [], set()
    while error is not None and id(error) not in seen:
        chain.append(error)
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return chain


def _scrub(message: str, token: str) -> str:
    return message.replace(token, "***") if token else message


def _first_line(error: object) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


@contextlib.contextmanager
def _quiet_libraries():
    """datasets and huggingface_hub log per-shard chatter and draw progress bars; keep them only on a terminal,
    so a failure ends as one line in logs and CI."""
    import datasets
    import huggingface_hub.utils as hub_utils
    from huggingface_hub.utils import logging as hub_logging

    interactive = sys.stderr.isatty()
    previous = (datasets.logging.get_verbosity(), hub_logging.get_verbosity())
    bars_were_off = (datasets.is_progress_bar_enabled() is False, hub_utils.are_progress_bars_disabled())
    datasets.logging.set_verbosity_error()
    hub_logging.set_verbosity_error()
    if not interactive:
        datasets.disable_progress_bars()
        hub_utils.disable_progress_bars()
    try:
        yield
    finally:
        datasets.logging.set_verbosity(previous[0])
        hub_logging.set_verbosity(previous[1])
        if not interactive:
            if not bars_were_off[0]:
                datasets.enable_progress_bars()
            if not bars_were_off[1]:
                hub_utils.enable_progress_bars()
