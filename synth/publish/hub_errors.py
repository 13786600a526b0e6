"""What a failed push says: the one line (``UserError``, or ``ResumableFailure`` where running the same command
again can succeed) for each way a Hub call fails: a reply over the size limit, a call past its deadline, an
HTTP error status, offline mode, no connection, a reply that is not the Hub's. The token never appears in it."""

from __future__ import annotations

import json

from synth.core.bounded_http import CallTimeout as HubTimeout
from synth.core.bounded_http import ReplyTooLarge
from synth.core.errors import ResumableFailure, UserError, exception_chain
from synth.core.limits import over_limit

LOGIN_HINT = "log in with `hf auth login` or set HF_TOKEN to a token with write access"


def hub_failure(
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
    chain = exception_chain(error)
    big = next((e for e in chain if isinstance(e, ReplyTooLarge)), None)
    if big is not None:
        line = str(over_limit("max_reply_bytes", f"the Hub at {endpoint}: reply to {big.call}", big.got))
        return UserError(scrub(f"{line}; while {stage}{done}", token))
    timeout = next((e for e in chain if isinstance(e, HubTimeout)), None)
    if timeout is not None:
        return ResumableFailure(
            scrub(
                f"the Hub at {endpoint} did not answer {timeout.call} within {round(timeout.seconds, 1):g}s "
                f"while {stage}{done}; run the same command again (SYNTH_HUB_TIMEOUT sets "
                "the limit)",
                token,
            )
        )
    http = next((e for e in chain if isinstance(e, HfHubHTTPError) and e.response is not None), None)
    if http is not None:
        return _http_failure(http, stage, repo, done, token)
    if any(isinstance(e, OfflineModeIsEnabled) for e in chain):
        return UserError(f"the Hugging Face Hub is in offline mode (HF_HUB_OFFLINE=1) while {stage}{done}")
    transport = next((e for e in chain if isinstance(e, TransportError)), None)
    if transport is not None:
        return ResumableFailure(
            scrub(
                f"cannot reach the Hub at {endpoint} while {stage} "
                f"({type(transport).__name__}){done}; run the same command again",
                token,
            )
        )
    odd = next((e for e in chain if isinstance(e, (KeyError, json.JSONDecodeError))), None)
    if odd is not None:  # a reply without the fields huggingface_hub reads: not a Hub, or a changed API
        return _odd_reply(odd, endpoint, last_call, stage, done, token)
    if isinstance(error, ValueError):  # datasets refusing the repo's state, e.g. features that differ
        return UserError(scrub(f"{stage} to {repo} failed: {first_line(error)[:300]}{done}", token))
    return None


def _odd_reply(odd: Exception, endpoint: str, last_call: str | None, stage: str, done: str, token: str) -> UserError:
    what = f"missing key {odd.args[0]!r}" if isinstance(odd, KeyError) else f"not JSON ({odd.msg})"
    return UserError(
        scrub(
            f"unexpected reply from the Hub at {endpoint} to {last_call or 'a call'} while "
            f"{stage}: {what}{done}; is HF_ENDPOINT a Hugging Face Hub?",
            token,
        )
    )


def _http_failure(http, stage: str, repo: str, done: str, token: str) -> UserError:
    """The one line for an HTTP error status from the Hub: a bad token, no write access, a Hub failure (worth
    running again), or the status and the server's message."""
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
            scrub(f"the Hub failed (HTTP {status}) while {stage}{done}; run the same command again", token)
        )
    else:
        detail = first_line(http.server_message or http)[:200]
        message = f"the Hub answered HTTP {status} while {stage}: {detail}"
    return UserError(scrub(message + done, token))


def scrub(message: str, token: str) -> str:
    return message.replace(token, "***") if token else message


def first_line(error: object) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
