"""The ``--callback-url`` ready notice: one JSON POST, retried on transient failures.

An orchestrator starts a worker and waits to be told where it listens. The notice is sent once
the model is loaded; connection errors, timeouts, 408/425/429 and 5xx answers are retried
with exponential backoff (they are what a restarting orchestrator produces), while other 4xx
answers are final: the orchestrator understood and refused, so repeating cannot help.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

RETRIABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


def post_ready_notice(
    url: str,
    payload: dict[str, Any],
    *,
    attempts: int = 6,
    first_backoff_s: float = 0.5,
    timeout_s: float = 5.0,
    api_key: str | None = None,
    log: Callable[..., None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> bool:
    """POST ``payload`` to ``url``; True once a 2xx answer came back, False after giving up."""
    body = json.dumps(payload).encode()
    headers = {"Content-Type": "application/json", "User-Agent": "orcd-worker"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    backoff = first_backoff_s
    for attempt in range(1, attempts + 1):
        req = urllib.request.Request(url, data=body, headers=headers, method="POST")
        reason: str
        retry = True
        try:
            with urllib.request.urlopen(req, timeout=timeout_s) as resp:
                status = resp.status
            if 200 <= status < 300:
                if log:
                    log("callback.sent", url=url, attempt=attempt, status=status)
                return True
            reason = f"HTTP {status}"
            retry = status in RETRIABLE_STATUS
        except urllib.error.HTTPError as exc:
            reason = f"HTTP {exc.code}"
            retry = exc.code in RETRIABLE_STATUS
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
            reason = f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
        if log:
            log("callback.failed", level="warning", url=url, attempt=attempt, reason=reason,
                will_retry=retry and attempt < attempts)
        if not retry or attempt == attempts:
            return False
        sleep(backoff)
        backoff = min(backoff * 2, 8.0)
    return False
