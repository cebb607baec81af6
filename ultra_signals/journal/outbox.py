"""The outbox: every message to send is a row in the journal DB before anyone tries to send it.

Why the journal DB: a message must survive a crash between "decided" and "delivered", and the journal is the
store the decision was committed to a moment earlier.  One row is one ``sendMessage`` (a long notice becomes
several rows, in order).  ``(chat_id, chat_key, part)`` is unique, so enqueuing the same decision twice — a
retry, a replay over the same journal — cannot produce a second message, and a row marked ``sent`` is never
picked again, also not by the next process.

Rows belong to a ``sender`` (the deployment: namespace and mode), so a shadow and a canary process sharing one
journal file each deliver only their own messages.  The table is :data:`.schema.telegram_outbox`; the store
expects a journal at the schema's head (opening a :class:`~ultra_signals.journal.writer.Journal` upgrades it).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Engine, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from ultra_signals.journal.schema import telegram_outbox as outbox

PENDING, SENT, FAILED = "pending", "sent", "failed"


@dataclass(frozen=True, slots=True)
class OutboxRow:
    id: int
    chat_id: str
    chat_key: str | None
    part: int
    kind: str
    text: str
    silent: bool
    attempts: int


class Outbox:
    """Durable queue of messages for one sender; all calls are short synchronous DB statements."""

    def __init__(self, engine: Engine, sender: str) -> None:
        self.engine = engine
        self.sender = sender

    def enqueue(self, chat_id: str, kind: str, parts: Sequence[str], chat_key: str | None, silent: bool) -> bool:
        """Add the parts of one message for one chat; False if ``(chat_id, chat_key)`` was enqueued before."""
        now = time.time()
        rows = [
            {
                "sender": self.sender,
                "chat_id": chat_id,
                "chat_key": chat_key,
                "part": i,
                "kind": kind,
                "text": text,
                "silent": silent,
                "status": PENDING,
                "attempts": 0,
                "created_at": now,
            }
            for i, text in enumerate(parts)
        ]
        if not rows:
            return False
        if chat_key is not None and self.known(chat_id, chat_key):
            return False
        try:
            with self.engine.begin() as c:
                c.execute(insert(outbox), rows)
        except IntegrityError:  # a concurrent enqueue of the same key won the race
            return False
        return True

    def known(self, chat_id: str, chat_key: str) -> bool:
        with self.engine.connect() as c:
            q = select(outbox.c.id).where(outbox.c.chat_id == chat_id, outbox.c.chat_key == chat_key).limit(1)
            return c.execute(q).first() is not None

    def chats_with_pending(self) -> list[str]:
        q = select(outbox.c.chat_id).where(outbox.c.sender == self.sender, outbox.c.status == PENDING).distinct()
        with self.engine.connect() as c:
            return [str(r[0]) for r in c.execute(q)]

    def next_pending(self, chat_id: str) -> OutboxRow | None:
        """The oldest pending row of a chat: messages to one chat go out strictly in order."""
        q = (
            select(outbox)
            .where(outbox.c.sender == self.sender, outbox.c.chat_id == chat_id, outbox.c.status == PENDING)
            .order_by(outbox.c.id)
            .limit(1)
        )
        with self.engine.connect() as c:
            r = c.execute(q).mappings().first()
        if r is None:
            return None
        return OutboxRow(
            id=int(r["id"]),
            chat_id=str(r["chat_id"]),
            chat_key=r["chat_key"],
            part=int(r["part"]),
            kind=str(r["kind"]),
            text=str(r["text"]),
            silent=bool(r["silent"]),
            attempts=int(r["attempts"]),
        )

    def note_attempt(self, row_id: int, error: str | None) -> None:
        with self.engine.begin() as c:
            c.execute(
                update(outbox).where(outbox.c.id == row_id).values(attempts=outbox.c.attempts + 1, last_error=error)
            )

    def mark_sent(self, row_id: int, message_id: int) -> bool:
        """Commit the delivery; False if the row was not pending (it must then not be sent again either)."""
        with self.engine.begin() as c:
            n = c.execute(
                update(outbox)
                .where(outbox.c.id == row_id, outbox.c.status == PENDING)
                .values(
                    status=SENT,
                    sent_at=time.time(),
                    message_id=message_id,
                    attempts=outbox.c.attempts + 1,
                    last_error=None,
                )
            ).rowcount
        return bool(n)

    def mark_failed(self, row_id: int, reason: str) -> None:
        with self.engine.begin() as c:
            c.execute(
                update(outbox)
                .where(outbox.c.id == row_id, outbox.c.status == PENDING)
                .values(status=FAILED, attempts=outbox.c.attempts + 1, last_error=reason)
            )

    def pending_count(self) -> int:
        q = select(func.count()).select_from(outbox).where(outbox.c.sender == self.sender, outbox.c.status == PENDING)
        with self.engine.connect() as c:
            return int(c.execute(q).scalar_one())

    def rows(self, chat_id: str | None = None) -> list[dict[str, object]]:
        """Every row of this sender in delivery order (for tests and the operator)."""
        q = select(outbox).where(outbox.c.sender == self.sender).order_by(outbox.c.id)
        if chat_id is not None:
            q = q.where(outbox.c.chat_id == chat_id)
        with self.engine.connect() as c:
            return [dict(r) for r in c.execute(q).mappings()]
