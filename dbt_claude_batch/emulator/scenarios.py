"""Fault injection by named scenario.

Each scenario is a JSON object with a `name`; `times` is how many times it fires before it is
spent (default: unlimited, except `drop_create`, `lose_create_response` and `cut_download`,
default 1).

  http_error            {"status": 429|500|529|..., "route": "create"|"retrieve"|"list"|"cancel"|
                         "delete"|"results"|"messages"|"count_tokens"|"list_models"|
                         "retrieve_model"|"any", "times": N, "retry_after": seconds}
  result_errors         {"rates": {"api_error": r, "overloaded_error": r,
                         "invalid_request_error": r, "expired": r}, "seed": S}
  result_outcome        {"custom_ids": [...], "outcome": "api_error"|"overloaded_error"|
                         "invalid_request_error"|"expired", "times": N (batches)}
  cut_download          {"after_bytes": N}
  missing_results       {"count": N} or {"custom_ids": [...]}, "times": N (batches)
  archive_results       {} results of every ended batch are archived on their next access
  lose_create_response  {} alias of drop_create with "when": "after"
  drop_create           {"when": "before"|"after", "times": N} the connection of a create is
                         closed without an answer, before anything is created or after the
                         batch is created (default times 1)
  spend_limit           {"route": "create" (default)|..., "times": N} 429 rate_limit_error
                         "workspace has reached its spend limit", without retry-after
  credit_balance_too_low {"route": "create" (default)|..., "times": N} 400 invalid_request_error
                         "Your credit balance is too low to access the Anthropic API. ..."
  never_end             {} batches created while active do not end before expires_at
  slow_create           {"seconds": S, "times": N} a create is carried out at once (the batch
                         exists and is listed) but answered only S seconds later, or at
                         POST /_emulator/release
  queue_limit           {"max_requests": N, "retry_after": seconds (default 60), "times": N}
                         a create whose requests, added to those of every batch still in the
                         processing queue (see batches.in_queue), would exceed N is refused
                         with 429 rate_limit_error and a retry-after header; nothing is
                         created. `times` (default unlimited) counts refusals.
"""

from __future__ import annotations

import hashlib
import threading

ROUTES = ("create", "retrieve", "list", "cancel", "delete", "results", "messages", "count_tokens",
          "list_models", "retrieve_model", "upload_file", "list_files", "retrieve_file", "delete_file",
          "download_file", "any")
OUTCOMES = ("api_error", "overloaded_error", "invalid_request_error", "expired")
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 402: "billing_error",
               403: "permission_error", 404: "not_found_error", 408: "timeout_error",
               413: "request_too_large", 429: "rate_limit_error", 500: "api_error",
               503: "api_error", 504: "timeout_error", 529: "overloaded_error"}
OUTCOME_MESSAGES = {
    "api_error": "Internal server error",
    "overloaded_error": "Overloaded",
    "invalid_request_error": "Invalid request (injected by the emulator's scenario)",
}
DEFAULT_TIMES = {"lose_create_response": 1, "drop_create": 1, "cut_download": 1}
NAMES = ("http_error", "result_errors", "result_outcome", "cut_download", "missing_results",
         "archive_results", "lose_create_response", "drop_create", "spend_limit", "never_end",
         "queue_limit", "slow_create", "credit_balance_too_low")
QUEUE_RETRY_AFTER = 60
DROP_WHEN = ("before", "after")


class ScenarioError(ValueError):
    pass


def normalise(raw: object) -> dict:
    if not isinstance(raw, dict) or raw.get("name") not in NAMES:
        raise ScenarioError(f"unknown scenario {raw!r}; known: {', '.join(NAMES)}")
    s = dict(raw)
    name = s["name"]
    if s.get("times") is None:
        s["times"] = DEFAULT_TIMES.get(name)
    elif not isinstance(s["times"], int) or s["times"] < 1:
        raise ScenarioError("times must be a positive integer")
    if name == "http_error":
        if not isinstance(s.get("status"), int) or not 400 <= s["status"] <= 599:
            raise ScenarioError("http_error needs an HTTP error status")
        s.setdefault("route", "any")
        if s["route"] not in ROUTES:
            raise ScenarioError(f"route must be one of {ROUTES}")
    elif name in ("spend_limit", "credit_balance_too_low"):
        s.setdefault("route", "create")
        if s["route"] not in ROUTES:
            raise ScenarioError(f"route must be one of {ROUTES}")
    elif name == "queue_limit":
        limit = s.get("max_requests")
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
            raise ScenarioError("queue_limit needs max_requests: an integer >= 0")
        if s.get("retry_after") is None:
            s["retry_after"] = QUEUE_RETRY_AFTER
        elif not isinstance(s["retry_after"], (int, float)) or isinstance(s["retry_after"], bool) \
                or s["retry_after"] < 0:
            raise ScenarioError("queue_limit retry_after must be a number of seconds >= 0")
    elif name == "drop_create":
        if s.get("when") not in DROP_WHEN:
            raise ScenarioError(f"drop_create needs \"when\": one of {DROP_WHEN}")
    elif name == "result_errors":
        rates = s.get("rates")
        if not isinstance(rates, dict) or any(k not in OUTCOMES for k in rates) or sum(rates.values()) > 1:
            raise ScenarioError(f"rates must map {OUTCOMES} to probabilities summing to <= 1")
        s.setdefault("seed", 0)
    elif name == "result_outcome":
        if not isinstance(s.get("custom_ids"), list) or s.get("outcome") not in OUTCOMES:
            raise ScenarioError(f"result_outcome needs custom_ids and an outcome in {OUTCOMES}")
    elif name == "cut_download":
        if not isinstance(s.get("after_bytes"), int) or s["after_bytes"] < 0:
            raise ScenarioError("cut_download needs after_bytes >= 0")
    elif name == "missing_results":
        if not isinstance(s.get("count"), int) and not isinstance(s.get("custom_ids"), list):
            raise ScenarioError("missing_results needs count or custom_ids")
    elif name == "slow_create":
        if not isinstance(s.get("seconds"), (int, float)) or isinstance(s.get("seconds"), bool) or s["seconds"] < 0:
            raise ScenarioError("slow_create needs seconds >= 0")
    return s


class Scenarios:
    """The armed scenarios; thread-safe; spent ones are removed."""

    def __init__(self, armed: list | None = None) -> None:
        self._lock = threading.Lock()
        self.armed: list[dict] = [normalise(s) for s in armed or []]
        self.dirty = False

    def replace(self, raw: list) -> None:
        new = [normalise(s) for s in raw]
        with self._lock:
            self.armed, self.dirty = new, True

    def add(self, raw: dict) -> None:
        s = normalise(raw)
        with self._lock:
            self.armed.append(s)
            self.dirty = True

    def listing(self) -> list[dict]:
        with self._lock:
            return [dict(s) for s in self.armed]

    def active(self, name: str) -> list[dict]:
        with self._lock:
            return [s for s in self.armed if s["name"] == name]

    def _spend(self, s: dict) -> None:
        if s.get("times") is not None:
            s["times"] -= 1
            if s["times"] <= 0 and s in self.armed:
                self.armed.remove(s)
        self.dirty = True

    def _take(self, predicate) -> dict | None:
        with self._lock:
            for s in self.armed:
                if predicate(s):
                    fired = dict(s)
                    self._spend(s)
                    return fired
        return None

    def fire(self, name: str, predicate=lambda s: True) -> dict | None:
        """Take the first armed scenario `name` matching `predicate`, spending one use."""
        return self._take(lambda s: s["name"] == name and predicate(s))

    def http_error(self, route: str) -> dict | None:
        """The http_error to answer a call on `route` with, if one is armed (spends one use)."""
        return self.fire("http_error", lambda s: s["route"] in (route, "any"))

    def spend_limit(self, route: str) -> dict | None:
        """The spend_limit refusing a call on `route`, if one is armed (spends one use)."""
        return self.fire("spend_limit", lambda s: s["route"] in (route, "any"))

    def credit_balance_too_low(self, route: str) -> dict | None:
        """The credit_balance_too_low refusing a call on `route`, if one is armed (spends one use)."""
        return self.fire("credit_balance_too_low", lambda s: s["route"] in (route, "any"))

    def queue_limit(self) -> dict | None:
        """The tightest armed queue_limit (smallest max_requests), or None; spends nothing."""
        with self._lock:
            limits = [s for s in self.armed if s["name"] == "queue_limit"]
            return dict(min(limits, key=lambda s: s["max_requests"])) if limits else None

    def queue_refusal(self, queued: int, requested: int) -> dict | None:
        """The queue_limit refusing a create of `requested` requests while `queued` wait in the
        processing queue, if one is armed and would be exceeded (spends one use), else None."""
        with self._lock:
            limits = [s for s in self.armed if s["name"] == "queue_limit"]
            if not limits:
                return None
            tightest = min(limits, key=lambda s: s["max_requests"])
            if queued + requested <= tightest["max_requests"]:
                return None
            fired = dict(tightest)
            self._spend(tightest)
            return fired

    def slow_create(self) -> dict | None:
        """The slow_create due now, spending one use."""
        return self._take(lambda s: s["name"] == "slow_create")

    def drop_create(self, when: str) -> dict | None:
        """The drop_create (or its alias lose_create_response) due at `when`, spending one use."""
        return self._take(lambda s: (s["name"] == "drop_create" and s["when"] == when)
                          or (s["name"] == "lose_create_response" and when == "after"))

    def outcomes_for_batch(self, batch_id: str, custom_ids: list[str]) -> dict[str, str]:
        """custom_id -> forced outcome for one batch being processed."""
        forced: dict[str, str] = {}
        ids = set(custom_ids)
        with self._lock:
            for s in list(self.armed):
                if s["name"] == "result_outcome":
                    hit = [c for c in s["custom_ids"] if c in ids]
                    if hit:
                        for c in hit:
                            forced.setdefault(c, s["outcome"])
                        self._spend(s)
            rolls = [s for s in self.armed if s["name"] == "result_errors"]
        for s in rolls:
            for cid in custom_ids:
                if cid in forced:
                    continue
                h = hashlib.sha256(f"{s['seed']}|{batch_id}|{cid}".encode()).digest()
                x = int.from_bytes(h[:8], "big") / 2**64
                acc = 0.0
                for outcome in OUTCOMES:
                    acc += float(s["rates"].get(outcome, 0))
                    if x < acc:
                        forced[cid] = outcome
                        break
        return forced

    def missing_for_batch(self, succeeded_ids: list[str]) -> set[str]:
        """custom_ids whose succeeded lines the results file will omit."""
        missing: set[str] = set()
        with self._lock:
            for s in list(self.armed):
                if s["name"] != "missing_results":
                    continue
                if isinstance(s.get("custom_ids"), list):
                    chosen = [c for c in succeeded_ids if c in set(s["custom_ids"])]
                else:
                    chosen = succeeded_ids[: s["count"]]
                if chosen:
                    missing.update(chosen)
                    self._spend(s)
        return missing
