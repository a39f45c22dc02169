"""The fake provider's batch APIs: OpenAI Batch (Files + /v1/batches), Anthropic Message
Batches and Gemini batch mode, in the shapes of the API references (recorded examples in
tests/data/providers/batch/, their sources in tests/data/providers/SOURCES.md).

A batch moves on as it is polled: submitted (``validating`` / ``in_progress`` /
``BATCH_STATE_PENDING``), running, then ended after ``polls_to_finish`` status reads (never
while ``hold`` is set: a batch that takes hours). When it ends, request ``i`` (0-based, in
the order submitted) is expired if ``expire_after`` is set and ``i >= expire_after``,
refused with a 400 if ``(i + 1) % fail_every == 0``, answered with a 500 if
``(i + 1) % error_500_every == 0``, else answered (a provider-shaped response whose text
names the request's last user message, or is ``answer_text``; usage from the server's
``usage``). A cancelled
batch answers its first ``len // 2`` requests. ``refuse_create`` answers a create with that
status; ``drop_create`` creates the batch but drops the connection before answering (what
a client sees as a timeout: it must find the batch, not create another).

What was asked is counted: ``creates`` (every create request that made a batch, per
provider), ``submitted`` (custom ids per batch), ``answered`` (requests answered: what was
paid), ``polls``.
"""

from __future__ import annotations

import email.parser
import email.policy
import itertools
import json
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

__all__ = ["FakeBatches", "Route"]

_CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")  # Anthropic's rule (the strictest)


@dataclass
class Route:
    """A batch API answer: status, JSON (or text) body, headers; ``drop``: no answer."""

    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False


@dataclass
class _Batch:
    provider: str  # openai | anthropic | gemini
    id: str
    key: str | None  # our key as the client sent it (metadata, display name)
    model: str
    items: list[tuple[str, dict[str, Any]]]  # (custom id, request body) in order
    created: float
    host: str
    endpoint: str = "/v1/chat/completions"
    polls: int = 0
    state: str = "submitted"  # submitted | running | ended | cancelling | cancelled
    outcomes: dict[str, tuple[str, Any]] = field(default_factory=dict)  # id -> (kind, data)
    files: tuple[str | None, str | None] = (None, None)  # openai output / error file ids
    expired: bool = False


class FakeBatches:
    """The batch routes of the fake server (``FakeProviderServer.batches``)."""

    OPTIONS = (
        "polls_to_finish",
        "hold",
        "expire_after",
        "fail_every",
        "error_500_every",
        "refuse_create",
        "drop_create",
        "answer_text",
    )

    def __init__(self, server: Any) -> None:
        self.server = server
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self.reset()

    def reset(self) -> None:
        with getattr(self, "_lock", threading.Lock()):
            self.batches: dict[str, _Batch] = {}
            self.files: dict[str, bytes] = {}
            self.creates: dict[str, int] = {}
            self.submitted: list[tuple[str, list[str]]] = []
            self.answered: dict[str, int] = {}
            self.polls = 0
        self.polls_to_finish = 1
        self.hold = False
        self.expire_after: int | None = None
        self.fail_every: int | None = None
        self.error_500_every: int | None = None
        self.refuse_create: int | None = None
        self.drop_create = False
        self.answer_text: str | None = None  # every answer's text (else it names the prompt)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "creates": dict(self.creates),
                "submitted": [list(s) for s in self.submitted],
                "answered": dict(self.answered),
                "polls": self.polls,
                "batches": {b.id: b.state for b in self.batches.values()},
            }

    def configure(self, options: dict[str, Any]) -> None:
        for name in self.OPTIONS:
            if name in options:
                setattr(self, name, options[name])

    # ── routing ───────────────────────────────────────────────────────────────

    def route(
        self, method: str, path: str, query: dict[str, str], headers: dict[str, str], body: bytes
    ) -> Route | None:
        """The answer to a batch API request, or None for any other path."""
        host = "http://" + headers.get("host", "127.0.0.1")
        if path.endswith("/files") and method == "POST":
            return self._upload(headers, body)
        match = re.search(r"/files/([^/]+)/content$", path)
        if match and method == "GET":
            return self._file(match.group(1))
        if path.endswith("/messages/batches"):
            if method == "POST":
                return self._create_anthropic(_json(body), host)
            return self._list("anthropic", query)
        match = re.search(r"/messages/batches/([^/]+)(/results|/cancel)?$", path)
        if match:
            return self._anthropic_batch(match.group(1), match.group(2), method)
        if re.search(r"/v1(beta)?/batches$", path) and "/models/" not in path:
            if method == "POST":
                return self._create_openai(_json(body), host)
            return self._list(_provider_of(path), query)
        match = re.search(r"/v1/batches/([^/]+?)(/cancel)?$", path)
        if match:
            return self._openai_batch(match.group(1), match.group(2), method)
        match = re.search(r"/models/([^/:]+):batchGenerateContent$", path)
        if match and method == "POST":
            return self._create_gemini(match.group(1), _json(body), host)
        match = re.search(r"/v1beta/batches/([^/:]+)(:cancel)?$", path)
        if match:
            return self._gemini_batch(match.group(1), match.group(2), method)
        return None

    # ── shared: progress and outcomes ─────────────────────────────────────────

    def _new_batch(
        self,
        provider: str,
        prefix: str,
        key: str | None,
        model: str,
        items: list[tuple[str, dict[str, Any]]],
        host: str,
    ) -> _Batch | Route:
        if self.refuse_create is not None:
            return Route(self.refuse_create, _error(provider, self.refuse_create, "refused"))
        ids = [cid for cid, _ in items]
        if len(set(ids)) != len(ids):
            return Route(400, _error(provider, 400, "custom_id values must be unique"))
        batch_id = f"{prefix}{next(self._ids):06d}"
        batch = _Batch(provider, batch_id, key, model, items, time.time(), host)
        with self._lock:
            self.batches[batch_id] = batch
            self.creates[provider] = self.creates.get(provider, 0) + 1
            self.submitted.append((provider, ids))
        return batch

    def _advance(self, batch: _Batch) -> None:
        """One status read: the batch moves on."""
        with self._lock:
            self.polls += 1
            batch.polls += 1
        if batch.state == "submitted":
            batch.state = "running"
        elif batch.state == "running" and not self.hold and batch.polls > self.polls_to_finish:
            self._finish(batch, cancelled=False)
        elif batch.state == "cancelling":
            self._finish(batch, cancelled=True)

    def _finish(self, batch: _Batch, *, cancelled: bool) -> None:
        answered = 0
        for index, (cid, body) in enumerate(batch.items):
            if cancelled and index >= len(batch.items) // 2:
                batch.outcomes[cid] = ("cancelled", None)
            elif self.expire_after is not None and index >= self.expire_after:
                batch.outcomes[cid] = ("expired", None)
                batch.expired = True
            elif self.fail_every and (index + 1) % self.fail_every == 0:
                batch.outcomes[cid] = ("error", (400, "invalid_request_error", "bad request"))
            elif self.error_500_every and (index + 1) % self.error_500_every == 0:
                batch.outcomes[cid] = ("error", (500, "api_error", "internal error"))
            else:
                batch.outcomes[cid] = ("ok", self._answer(batch, index, body))
                answered += 1
        batch.state = "cancelled" if cancelled else "ended"
        with self._lock:
            self.answered[batch.provider] = self.answered.get(batch.provider, 0) + answered

    def _answer(self, batch: _Batch, index: int, body: dict[str, Any]) -> dict[str, Any]:
        from tests.fakes.provider_server import _anthropic_body, _gemini_body, _openai_body

        text = self.answer_text or f"batch answer: {_last_user_text(batch.provider, body)}"
        usage = self.server.usage
        if batch.provider == "anthropic":
            return _anthropic_body(index, batch.model, text, usage)
        if batch.provider == "gemini":
            return _gemini_body(batch.model, text, usage)
        return _openai_body(index, batch.model, text, usage)

    def _counts(self, batch: _Batch) -> tuple[int, int, int]:
        """(answered, failed, still to do)."""
        kinds = [kind for kind, _ in batch.outcomes.values()]
        done = kinds.count("ok")
        return done, len(kinds) - done, len(batch.items) - len(kinds)

    def _list(self, provider: str, query: dict[str, str]) -> Route:
        batches = [b for b in self.batches.values() if b.provider == provider]
        batches.sort(key=lambda b: b.id, reverse=True)  # newest first
        if provider == "openai":
            data = [self._openai_object(b) for b in batches]
            return Route(
                200,
                {
                    "object": "list",
                    "data": data,
                    "has_more": False,
                    "first_id": data[0]["id"] if data else None,
                    "last_id": data[-1]["id"] if data else None,
                },
            )
        if provider == "anthropic":
            data = [self._anthropic_object(b) for b in batches]
            return Route(
                200,
                {
                    "data": data,
                    "has_more": False,
                    "first_id": data[0]["id"] if data else None,
                    "last_id": data[-1]["id"] if data else None,
                },
            )
        return Route(200, {"operations": [self._gemini_operation(b) for b in batches]})

    # ── OpenAI ────────────────────────────────────────────────────────────────

    def _upload(self, headers: dict[str, str], body: bytes) -> Route:
        parts = _multipart(headers.get("content-type", ""), body)
        if parts.get("purpose") != b"batch" or "file" not in parts:
            return Route(400, _error("openai", 400, "a batch file needs purpose=batch and file"))
        file_id = f"file-{next(self._ids):06d}"
        with self._lock:
            self.files[file_id] = parts["file"]
        return Route(
            200,
            {
                "id": file_id,
                "object": "file",
                "bytes": len(parts["file"]),
                "created_at": int(time.time()),
                "filename": f"{file_id}.jsonl",
                "purpose": "batch",
                "status": "processed",
            },
        )

    def _file(self, file_id: str) -> Route:
        content = self.files.get(file_id)
        if content is None:
            return Route(404, _error("openai", 404, f"no file {file_id}"))
        return Route(200, content.decode("utf-8"), {"content-type": "application/octet-stream"})

    def _create_openai(self, body: dict[str, Any], host: str) -> Route:
        content = self.files.get(str(body.get("input_file_id")))
        endpoint = body.get("endpoint")
        if content is None or body.get("completion_window") != "24h":
            return Route(400, _error("openai", 400, "input_file_id and completion_window=24h"))
        items = []
        models = set()
        for line in content.decode("utf-8").splitlines():
            record = json.loads(line)
            if record.get("method") != "POST" or record.get("url") != endpoint:
                return Route(400, _error("openai", 400, f"line url must be {endpoint}"))
            items.append((str(record["custom_id"]), record["body"]))
            models.add(record["body"].get("model"))
        if len(models) != 1:
            return Route(400, _error("openai", 400, "a batch's requests must use one model"))
        key = (body.get("metadata") or {}).get("baton_nb_batch")
        made = self._new_batch("openai", "batch_", key, models.pop(), items, host)
        if isinstance(made, Route):
            return made
        made.endpoint = str(endpoint)
        return Route(200, self._openai_object(made), drop=self.drop_create)

    def _openai_batch(self, batch_id: str, cancel: str | None, method: str) -> Route:
        batch = self.batches.get(batch_id)
        if batch is None:
            return Route(404, _error("openai", 404, f"no batch {batch_id}"))
        if cancel and method == "POST":
            if batch.state in ("submitted", "running"):
                batch.state = "cancelling"
            return Route(200, self._openai_object(batch))
        self._advance(batch)
        return Route(200, self._openai_object(batch))

    def _openai_object(self, batch: _Batch) -> dict[str, Any]:
        status = {
            "submitted": "validating",
            "running": "in_progress",
            "cancelling": "cancelling",
            "cancelled": "cancelled",
        }.get(batch.state, "completed")
        if batch.state == "ended" and batch.expired:
            status = "expired"
        done, failed, _ = self._counts(batch)
        if batch.state in ("ended", "cancelled") and batch.files == (None, None):
            batch.files = self._openai_files(batch)
        return {
            "id": batch.id,
            "object": "batch",
            "endpoint": batch.endpoint,
            "errors": None,
            "input_file_id": "file-in",
            "completion_window": "24h",
            "status": status,
            "output_file_id": batch.files[0],
            "error_file_id": batch.files[1],
            "created_at": int(batch.created),
            "in_progress_at": None,
            "expires_at": None,
            "finalizing_at": None,
            "completed_at": None,
            "failed_at": None,
            "expired_at": None,
            "cancelling_at": None,
            "cancelled_at": None,
            "request_counts": {"total": len(batch.items), "completed": done, "failed": failed},
            "metadata": {"baton_nb_batch": batch.key} if batch.key else None,
        }

    def _openai_files(self, batch: _Batch) -> tuple[str | None, str | None]:
        output, errors = [], []
        for n, (cid, (kind, data)) in enumerate(batch.outcomes.items()):
            line: dict[str, Any] = {"id": f"batch_req_{n}", "custom_id": cid}
            if kind == "ok":
                line |= {
                    "response": {"status_code": 200, "request_id": f"req_{n}", "body": data},
                    "error": None,
                }
                output.append(line)
            elif kind == "error":
                status, kind_name, message = data
                error_body = {"error": {"message": message, "type": kind_name, "code": None}}
                line |= {
                    "response": {
                        "status_code": status,
                        "request_id": f"req_{n}",
                        "body": error_body,
                    },
                    "error": None,
                }
                errors.append(line)
            else:
                code = "batch_expired" if kind == "expired" else "batch_cancelled"
                line |= {"response": None, "error": {"code": code, "message": "not run"}}
                errors.append(line)
        ids = []
        for lines in (output, errors):
            if not lines:
                ids.append(None)
                continue
            file_id = f"file-{next(self._ids):06d}"
            self.files[file_id] = "".join(json.dumps(x) + "\n" for x in lines).encode()
            ids.append(file_id)
        return ids[0], ids[1]

    # ── Anthropic ─────────────────────────────────────────────────────────────

    def _create_anthropic(self, body: dict[str, Any], host: str) -> Route:
        items = []
        for request in body.get("requests") or []:
            cid, params = request.get("custom_id"), request.get("params")
            if not isinstance(cid, str) or not _CUSTOM_ID.match(cid):
                return Route(400, _error("anthropic", 400, f"custom_id {cid!r} is invalid"))
            if not isinstance(params, dict) or "max_tokens" not in params or "stream" in params:
                return Route(400, _error("anthropic", 400, "params need max_tokens, no stream"))
            items.append((cid, params))
        if not items:
            return Route(400, _error("anthropic", 400, "requests: at least one"))
        made = self._new_batch("anthropic", "msgbatch_", None, items[0][1]["model"], items, host)
        if isinstance(made, Route):
            return made
        return Route(200, self._anthropic_object(made), drop=self.drop_create)

    def _anthropic_batch(self, batch_id: str, tail: str | None, method: str) -> Route:
        batch = self.batches.get(batch_id)
        if batch is None:
            return Route(404, _error("anthropic", 404, f"no batch {batch_id}"))
        if tail == "/cancel":
            if batch.state in ("submitted", "running"):
                batch.state = "cancelling"
            return Route(200, self._anthropic_object(batch))
        if tail == "/results":
            if batch.state not in ("ended", "cancelled"):
                return Route(400, _error("anthropic", 400, "batch has not ended"))
            lines = [
                json.dumps({"custom_id": cid, "result": _anthropic_result(kind, data)})
                for cid, (kind, data) in batch.outcomes.items()
            ]
            return Route(200, "\n".join(lines) + "\n", {"content-type": "application/binary"})
        self._advance(batch)
        return Route(200, self._anthropic_object(batch))

    def _anthropic_object(self, batch: _Batch) -> dict[str, Any]:
        ended = batch.state in ("ended", "cancelled")
        status = (
            "ended" if ended else ("canceling" if batch.state == "cancelling" else "in_progress")
        )
        kinds = [kind for kind, _ in batch.outcomes.values()]
        created = datetime.fromtimestamp(batch.created, timezone.utc).isoformat()
        return {
            "id": batch.id,
            "type": "message_batch",
            "processing_status": status,
            "request_counts": {
                "processing": 0 if ended else len(batch.items),
                "succeeded": kinds.count("ok"),
                "errored": kinds.count("error"),
                "canceled": kinds.count("cancelled"),
                "expired": kinds.count("expired"),
            },
            "ended_at": created if ended else None,
            "created_at": created,
            "expires_at": created,
            "archived_at": None,
            "cancel_initiated_at": created if batch.state in ("cancelling", "cancelled") else None,
            "results_url": f"{batch.host}/v1/messages/batches/{batch.id}/results"
            if ended
            else None,
        }

    # ── Gemini ────────────────────────────────────────────────────────────────

    def _create_gemini(self, model: str, body: dict[str, Any], host: str) -> Route:
        spec = body.get("batch") or {}
        requests = ((spec.get("inputConfig") or {}).get("requests") or {}).get("requests")
        if not isinstance(requests, list) or not spec.get("displayName"):
            return Route(400, _error("gemini", 400, "batch.displayName and inline requests"))
        items = []
        for n, item in enumerate(requests):
            key = (item.get("metadata") or {}).get("key") or str(n)
            if not isinstance(item.get("request"), dict) or "contents" not in item["request"]:
                return Route(400, _error("gemini", 400, "each request needs contents"))
            items.append((str(key), item["request"]))
        made = self._new_batch("gemini", "", spec["displayName"], model, items, host)
        if isinstance(made, Route):
            return made
        return Route(200, self._gemini_operation(made), drop=self.drop_create)

    def _gemini_batch(self, batch_id: str, cancel: str | None, method: str) -> Route:
        batch = self.batches.get(batch_id)
        if batch is None:
            return Route(404, _error("gemini", 404, f"no batch batches/{batch_id}"))
        if cancel:
            if batch.state in ("submitted", "running"):
                batch.state = "cancelling"
            return Route(200, {})
        self._advance(batch)
        return Route(200, self._gemini_operation(batch))

    def _gemini_operation(self, batch: _Batch) -> dict[str, Any]:
        state = {
            "submitted": "BATCH_STATE_PENDING",
            "running": "BATCH_STATE_RUNNING",
            "cancelling": "BATCH_STATE_RUNNING",
            "cancelled": "BATCH_STATE_CANCELLED",
            "ended": "BATCH_STATE_SUCCEEDED",
        }[batch.state]
        if batch.state == "ended" and batch.expired:
            state = "BATCH_STATE_EXPIRED"
        done, failed, todo = self._counts(batch)
        metadata = {
            "@type": "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatch",
            "model": f"models/{batch.model}",
            "displayName": batch.key,
            "createTime": datetime.fromtimestamp(batch.created, timezone.utc).isoformat(),
            "batchStats": {
                "requestCount": str(len(batch.items)),
                "successfulRequestCount": str(done),
                "failedRequestCount": str(failed),
                "pendingRequestCount": str(todo),
            },
            "state": state,
            "name": f"batches/{batch.id}",
        }
        operation: dict[str, Any] = {"name": f"batches/{batch.id}", "metadata": metadata}
        if batch.state in ("ended", "cancelled"):
            inlined = []
            for cid, (kind, data) in batch.outcomes.items():
                if kind == "ok":
                    inlined.append({"response": data, "metadata": {"key": cid}})
                elif kind == "error":
                    status, _, message = data
                    inlined.append(
                        {"error": {"code": status, "message": message}, "metadata": {"key": cid}}
                    )
            output_type = "type.googleapis.com/google.ai.generativelanguage.v1main."
            output = {
                "@type": output_type + "GenerateContentBatchOutput",
                "inlinedResponses": {"inlinedResponses": inlined},
            }
            operation |= {"done": True, "response": output}
        return operation


def _provider_of(path: str) -> str:
    return "gemini" if "/v1beta/" in path else "openai"


def _json(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body or b"{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _multipart(content_type: str, body: bytes) -> dict[str, bytes]:
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    parts: dict[str, bytes] = {}
    for part in message.iter_parts():  # type: ignore[attr-defined]
        name = part.get_param("name", header="content-disposition")
        if name:
            parts[str(name)] = part.get_payload(decode=True) or b""
    return parts


def _error(provider: str, status: int, message: str) -> dict[str, Any]:
    if provider == "anthropic":
        return {"type": "error", "error": {"type": "invalid_request_error", "message": message}}
    if provider == "gemini":
        return {"error": {"code": status, "message": message, "status": "INVALID_ARGUMENT"}}
    return {"error": {"message": message, "type": "invalid_request_error", "code": None}}


def _anthropic_result(kind: str, data: Any) -> dict[str, Any]:
    if kind == "ok":
        return {"type": "succeeded", "message": data}
    if kind == "error":
        _, kind_name, message = data
        return {
            "type": "errored",
            "error": {"type": "error", "error": {"type": kind_name, "message": message}},
        }
    return {"type": "canceled" if kind == "cancelled" else "expired"}


def _last_user_text(provider: str, body: dict[str, Any]) -> str:
    if provider == "gemini":
        contents = body.get("contents") or []
        parts = contents[-1].get("parts") if contents else []
        return " ".join(str(p.get("text", "")) for p in parts or [])[:60]
    messages = body.get("messages") or body.get("input") or []
    users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    content = users[-1].get("content") if users else ""
    if isinstance(content, list):
        content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return str(content)[:60]
