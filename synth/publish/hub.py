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
from dataclasses import dataclass, field
from pathlib import Path

from synth.core.bounded_http import BoundedTransport, CallTimeout
from synth.core.errors import UserError
from synth.core.files import atomic_write_json
from synth.core.limits import limit
from synth.publish.hub_errors import LOGIN_HINT, first_line, hub_failure

DEFAULT_CONFIG = "triplets"
RUN_FILES = ("dataset", "README.md", "report.json")
# Front-matter keys that describe the pushed data files: the Hub's copy (written by push_to_hub) wins.
HUB_OWNED_METADATA = ("configs", "dataset_info")

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
    push = _Push(api, repo, token, private)
    card_commit = push.configs_then_card(contents, names, hub_timeout())
    pushed = push.pushed

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


@dataclass
class _Push:
    """One push: the configs, then the card on top of the last config's commit. ``stage`` says what it was
    doing when a call fails, for the one line ``hub_failure`` makes of it."""

    api: object
    repo: str
    token: str
    private: bool
    pushed: list[dict] = field(default_factory=list)
    stage: str = "checking the token"

    def configs_then_card(self, contents: RunContents, names: list[str], limit: float):
        calls: dict = {"last": None}
        try:
            with _quiet_libraries(), _bounded_calls(limit, calls):
                self.api.whoami()
                for name in names:
                    self.stage = f"pushing config '{name}'"
                    self.pushed.append(self._config(contents.configs[name], name))
                self.stage = "uploading the dataset card"
                return self._card(contents)
        except Exception as e:  # noqa: BLE001 - translated into one line, or re-raised when not a Hub failure
            failure = hub_failure(
                e,
                stage=self.stage,
                repo=self.repo,
                pushed=[p["name"] for p in self.pushed],
                token=self.token,
                endpoint=self.api.endpoint,
                last_call=calls["last"],
            )
            if failure is None:
                raise
            raise failure from None

    def _config(self, dataset, name: str) -> dict:
        commit = dataset.push_to_hub(
            self.repo,
            config_name=name,
            split="train",
            private=self.private,
            token=self.token,
            set_default=True if name == DEFAULT_CONFIG else None,
        )
        return {"name": name, "rows": dataset.num_rows, "commit": commit.oid, "commit_url": commit.commit_url}

    def _card(self, contents: RunContents):
        card = merged_card(contents, _hub_card_text(self.repo, self.pushed[-1]["commit"], self.token))
        return self.api.upload_file(
            path_or_fileobj=card.encode(),
            path_in_repo="README.md",
            repo_id=self.repo,
            repo_type="dataset",
            commit_message="Update dataset card (synth)",
            parent_commit=self.pushed[-1]["commit"],
        )


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
        raise UserError(f"{run_dir / 'dataset'}: not a saved dataset ({first_line(e)})") from None
    # Older runs saved one Dataset: it is the training rows.
    configs = {DEFAULT_CONFIG: loaded} if isinstance(loaded, datasets.Dataset) else dict(loaded)

    from huggingface_hub import DatasetCard

    card_path = run_dir / "README.md"
    try:
        card = DatasetCard(card_path.read_text(encoding="utf-8"))
    except Exception as e:  # noqa: BLE001 - yaml raises several types; all mean a broken front matter
        raise UserError(f"{card_path}: the YAML front matter does not parse ({first_line(e)})") from None
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
