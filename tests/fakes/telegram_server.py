"""A fake Telegram Bot API on 127.0.0.1 that records what it receives and misbehaves on request.

It speaks the real protocol (HTTP POST of JSON to ``/bot<token>/<method>``, ``{"ok": ..., "result": ...}``
answers, 429 with ``parameters.retry_after``) and checks what real Telegram checks and we could get wrong:
``parse_mode=HTML`` must parse (only known tags, balanced, ``<`` and ``&`` escaped) and the text after parsing
must fit 4096 UTF-16 code units.  Each ``sendMessage`` takes the next scripted behaviour (``"ok"``, ``"500"``,
``"400"``, ``"403"``, ``("429", seconds)``, ``"hang"``), then the default one.  ``refuse()`` closes the port
so connections are refused; ``accept()`` opens it again.  ``getUpdates`` long-polls a queue of updates.

Receipt times are ``time.monotonic()`` of this process, the clock the notifier paces with.
"""

from __future__ import annotations

import html
import json
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Behaviour = str | tuple[str, float]

_TAG = re.compile(r"<(/?)([a-zA-Z-]+)((?:\s[^<>]*)?)>")
_ENTITY = re.compile(r"&(lt|gt|amp|quot|#\d+|#x[0-9a-fA-F]+);")
_TAGS = {"b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "code", "pre", "a", "tg-spoiler", "span"}


class HtmlError(ValueError):
    pass


def parse_html(text: str) -> str:
    """The plain text Telegram would show for ``text`` in HTML mode; HtmlError where Telegram would refuse."""
    out: list[str] = []
    stack: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "<":
            m = _TAG.match(text, i)
            if not m or m.group(2).lower() not in _TAGS:
                raise HtmlError(f"Bad Request: can't parse entities: unsupported start tag at byte offset {i}")
            name = m.group(2).lower()
            if m.group(1):
                if not stack or stack.pop() != name:
                    raise HtmlError(f"Bad Request: can't parse entities: unmatched end tag {name}")
            else:
                stack.append(name)
            i = m.end()
        elif ch == "&":
            m = _ENTITY.match(text, i)
            if not m:
                raise HtmlError(f"Bad Request: can't parse entities: unescaped & at offset {i}")
            out.append(html.unescape(m.group(0)))
            i = m.end()
        elif ch == ">":
            raise HtmlError(f"Bad Request: can't parse entities: unescaped > at offset {i}")
        else:
            out.append(ch)
            i += 1
    if stack:
        raise HtmlError(f"Bad Request: can't parse entities: unclosed tag {stack[-1]}")
    return "".join(out)


@dataclass
class Received:
    method: str
    payload: dict[str, Any]
    t: float  # monotonic receipt time
    outcome: str = ""


@dataclass
class Delivered:
    chat_id: str
    text: str  # as sent (HTML)
    plain: str  # as Telegram would show it
    silent: bool
    message_id: int
    t: float


@dataclass
class _State:
    script: deque[Behaviour] = field(default_factory=deque)
    default: Behaviour = "ok"
    requests: list[Received] = field(default_factory=list)
    delivered: list[Delivered] = field(default_factory=list)
    updates: list[dict[str, Any]] = field(default_factory=list)
    next_update_id: int = 1000
    next_message_id: int = 1
    hanging: int = 0


class FakeBotApi:
    """Start with ``with FakeBotApi() as api:``; point ``telegram.api_url`` at ``api.url``."""

    MAX_HANG_S = 60.0
    MAX_POLL_S = 5.0

    def __init__(self, token: str = "123456:TEST-token_abcdefghijklmnopqrstuvw", port: int = 0) -> None:
        self.token = token
        self.port = port
        self._lock = threading.Condition()
        self._state = _State()
        self._release = threading.Event()
        self._generation = 0  # bumped by refuse(): kept-alive connections of an older server get no answer
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------------------------
    def __enter__(self) -> FakeBotApi:
        self.accept()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def accept(self) -> None:
        """Listen (again, on the same port after :meth:`refuse`)."""
        if self._server is not None:
            return
        self._release.clear()
        handler = _make_handler(self, self._generation)
        server = ThreadingHTTPServer(("127.0.0.1", self.port), handler)
        server.daemon_threads = True
        self.port = int(server.server_address[1])
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def refuse(self) -> None:
        """Close the port: new connections are refused; hanging requests are dropped."""
        self._release.set()
        with self._lock:
            self._generation += 1
            self._lock.notify_all()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def stop(self) -> None:
        self.refuse()

    # -- steering -------------------------------------------------------------------------------------------
    def push(self, *behaviours: Behaviour) -> None:
        """Behaviours for the next sendMessage requests, in order."""
        with self._lock:
            self._state.script.extend(behaviours)

    def set_default(self, behaviour: Behaviour) -> None:
        with self._lock:
            self._state.default = behaviour

    def release_hangs(self) -> None:
        """Let hanging requests end (the connection closes without an answer)."""
        self._release.set()

    def push_update(
        self, chat_id: int | str, text: str, *, user_id: int | None = None, username: str | None = None
    ) -> int:
        """Queue a message update as if a user wrote ``text`` in ``chat_id``; returns its update id.

        The sender (``message.from``, a User object: https://core.telegram.org/bots/api#user) is ``user_id``
        (default: the chat id's absolute value, i.e. the private chat's own user), with ``username`` when given.
        """
        with self._lock:
            uid = self._state.next_update_id
            self._state.next_update_id += 1
            cid = int(chat_id)
            sender: dict[str, Any] = {"id": abs(cid) if user_id is None else user_id, "is_bot": False}
            sender["first_name"] = "op"
            if username is not None:
                sender["username"] = username
            self._state.updates.append(
                {
                    "update_id": uid,
                    "message": {
                        "message_id": uid,
                        "date": int(time.time()),
                        "chat": {"id": cid, "type": "group" if cid < 0 else "private"},
                        "from": sender,
                        "text": text,
                    },
                }
            )
            self._lock.notify_all()
            return uid

    # -- what was seen --------------------------------------------------------------------------------------
    @property
    def delivered(self) -> list[Delivered]:
        with self._lock:
            return list(self._state.delivered)

    @property
    def requests(self) -> list[Received]:
        with self._lock:
            return list(self._state.requests)

    @property
    def hanging(self) -> int:
        with self._lock:
            return self._state.hanging

    def delivered_to(self, chat_id: str) -> list[Delivered]:
        return [d for d in self.delivered if d.chat_id == str(chat_id)]

    def pending_updates(self) -> int:
        with self._lock:
            return len(self._state.updates)

    def wait_until(self, predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
        """Poll ``predicate`` until true or ``timeout`` (for synchronous tests)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.01)
        return predicate()

    # -- request handling (server threads) ------------------------------------------------------------------
    def _handle(self, method: str, payload: dict[str, Any]) -> tuple[int, dict[str, Any] | None]:
        t = time.monotonic()
        if method == "sendMessage":
            return self._send_message(payload, t)
        if method == "getUpdates":
            with self._lock:
                self._state.requests.append(Received(method, payload, t, "ok"))
            return 200, {"ok": True, "result": self._get_updates(payload)}
        return 404, {"ok": False, "error_code": 404, "description": "Not Found"}

    def _send_message(self, payload: dict[str, Any], t: float) -> tuple[int, dict[str, Any] | None]:
        with self._lock:
            behaviour = self._state.script.popleft() if self._state.script else self._state.default
            rec = Received("sendMessage", payload, t)
            self._state.requests.append(rec)
        name = behaviour[0] if isinstance(behaviour, tuple) else behaviour
        rec.outcome = name
        if name == "hang":
            with self._lock:
                self._state.hanging += 1
            self._release.wait(self.MAX_HANG_S)
            with self._lock:
                self._state.hanging -= 1
            return 0, None  # drop the connection without an answer
        if name == "429":
            wait = behaviour[1] if isinstance(behaviour, tuple) else 1
            return 429, {
                "ok": False,
                "error_code": 429,
                "description": f"Too Many Requests: retry after {wait:g}",
                "parameters": {"retry_after": wait},
            }
        if name == "500":
            return 500, {"ok": False, "error_code": 500, "description": "Internal Server Error"}
        if name == "403":
            return 403, {
                "ok": False,
                "error_code": 403,
                "description": "Forbidden: bot was blocked by the user",
            }
        if name == "400":
            return 400, {"ok": False, "error_code": 400, "description": "Bad Request: chat not found"}
        text = payload.get("text")
        if not isinstance(text, str) or "chat_id" not in payload:
            rec.outcome = "invalid"
            return 400, {"ok": False, "error_code": 400, "description": "Bad Request: message text is empty"}
        try:
            plain = parse_html(text) if payload.get("parse_mode") == "HTML" else text
        except HtmlError as e:
            rec.outcome = "invalid"
            return 400, {"ok": False, "error_code": 400, "description": str(e)}
        if not plain.strip():
            rec.outcome = "invalid"
            return 400, {"ok": False, "error_code": 400, "description": "Bad Request: message text is empty"}
        if len(plain.encode("utf-16-le")) // 2 > 4096:
            rec.outcome = "invalid"
            return 400, {"ok": False, "error_code": 400, "description": "Bad Request: message is too long"}
        with self._lock:
            mid = self._state.next_message_id
            self._state.next_message_id += 1
            self._state.delivered.append(
                Delivered(
                    chat_id=str(payload["chat_id"]),
                    text=text,
                    plain=plain,
                    silent=bool(payload.get("disable_notification")),
                    message_id=mid,
                    t=t,
                )
            )
        result = {
            "message_id": mid,
            "date": int(time.time()),
            "chat": {"id": payload["chat_id"]},
            "text": plain,
        }
        return 200, {"ok": True, "result": result}

    def _get_updates(self, payload: dict[str, Any]) -> list[dict[str, Any]]:
        offset = payload.get("offset")
        timeout = min(float(payload.get("timeout") or 0), self.MAX_POLL_S)
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                if isinstance(offset, int):  # confirming: updates below offset are forgotten, as Telegram does
                    self._state.updates = [u for u in self._state.updates if u["update_id"] >= offset]
                if self._state.updates or self._release.is_set():
                    return list(self._state.updates)
                left = deadline - time.monotonic()
                if left <= 0:
                    return []
                self._lock.wait(min(left, 0.1))


def _make_handler(api: FakeBotApi, generation: int) -> type[BaseHTTPRequestHandler]:
    prefix = f"/bot{api.token}/"

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
            return

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            if api._generation != generation:  # the port was closed: behave like a dead server
                self.close_connection = True
                return
            if not self.path.startswith(prefix):
                self._answer(401, {"ok": False, "error_code": 401, "description": "Unauthorized"})
                return
            try:
                payload = json.loads(body or b"{}")
            except ValueError:
                self._answer(400, {"ok": False, "error_code": 400, "description": "Bad Request: invalid JSON"})
                return
            status, answer = api._handle(self.path[len(prefix) :], payload)
            if answer is None:
                self.close_connection = True
                return
            self._answer(status, answer)

        def _answer(self, status: int, answer: dict[str, Any]) -> None:
            data = json.dumps(answer).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if status == 429:
                    self.send_header("Retry-After", str(answer["parameters"]["retry_after"]))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (a cancelled long poll)
                self.close_connection = True

    return Handler
