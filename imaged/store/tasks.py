"""
Tasks in the metadata database: ``ITaskStore``'s half of ``SQLMetadataStore``.

Tasks share the images' database (one transaction can read both, one backup holds both), so
the methods live on the same store, written here as a mixin to keep ``sql.py`` about images.
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol, TypeVar

from sqlalchemy import delete, false, insert, select, update
from sqlalchemy.engine import Connection, Row
from twisted.internet.defer import Deferred

from ..errors import BadRequest, NotFound
from ..model import Task, TaskStatus, claim_node
from .tables import nodes, tasks

T = TypeVar("T")

_COLUMNS = (
    "id", "type", "status", "owner", "image_id", "input", "result", "message", "request_id",
    "user_id", "node", "done", "total", "created_at", "updated_at", "expires_at",
)
_SELECT = select(*(tasks.c[name] for name in _COLUMNS))


def _when(value: datetime | str | None) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(value)


def _task(row: Row[Any]) -> Task:
    values = dict(zip(_COLUMNS, row, strict=True))
    created, updated = _when(values["created_at"]), _when(values["updated_at"])
    assert created is not None and updated is not None
    return Task(
        id=values["id"],
        type=values["type"],
        status=TaskStatus(values["status"]),
        owner=values["owner"],
        image_id=values["image_id"],
        input=json.loads(values["input"]),
        result=None if values["result"] is None else json.loads(values["result"]),
        message=values["message"],
        request_id=values["request_id"],
        user_id=values["user_id"],
        node=values["node"],
        done=int(values["done"]),
        total=values["total"],
        created_at=created,
        updated_at=updated,
        expires_at=_when(values["expires_at"]),
    )


def _row(task: Task) -> dict[str, Any]:
    values = {name: getattr(task, name) for name in _COLUMNS}
    values["status"] = task.status.value
    values["input"] = json.dumps(task.input)
    values["result"] = None if task.result is None else json.dumps(task.result)
    values["deleted"] = False
    return values


class _Transactions(Protocol):
    def _transaction(
        self, name: str, fn: Callable[[Connection], T], write: bool = False
    ) -> Deferred[T]: ...


class SQLTasks:
    """``ITaskStore`` over the store's ``_transaction``."""

    def insert_task(self: _Transactions, task: Task) -> Deferred[Task]:
        def txn(connection: Connection) -> Task:
            connection.execute(insert(tasks).values(**_row(task)))
            return task

        return self._transaction("create_task", txn, write=True)

    def get_task(self: _Transactions, task_id: str) -> Deferred[Task | None]:
        def txn(connection: Connection) -> Task | None:
            row = connection.execute(
                _SELECT.where(tasks.c.id == task_id, tasks.c.deleted == false())
            ).first()
            return None if row is None else _task(row)

        return self._transaction("get_task", txn)

    def delete_task(self: _Transactions, task_id: str) -> Deferred[None]:
        def txn(connection: Connection) -> None:
            connection.execute(delete(tasks).where(tasks.c.id == task_id))

        return self._transaction("delete_task", txn, write=True)

    def modify_task(
        self: _Transactions, task_id: str, mutate: Callable[[Task], Task]
    ) -> Deferred[Task]:
        def txn(connection: Connection) -> Task:
            row = connection.execute(
                _SELECT.where(tasks.c.id == task_id, tasks.c.deleted == false()).with_for_update()
            ).first()
            if row is None:
                raise NotFound(f"Task with identifier {task_id} not found")
            old = _task(row)
            new = mutate(old)
            if new != old:
                values = _row(new)
                del values["id"]
                connection.execute(update(tasks).where(tasks.c.id == task_id).values(**values))
            return new

        return self._transaction("modify_task", txn, write=True)

    def image_tasks(self: _Transactions, image_id: str) -> Deferred[builtins.list[Task]]:
        def txn(connection: Connection) -> builtins.list[Task]:
            statement = _SELECT.where(
                tasks.c.image_id == image_id, tasks.c.deleted == false()
            ).order_by(tasks.c.created_at, tasks.c.id)
            return [_task(row) for row in connection.execute(statement)]

        return self._transaction("image_tasks", txn)

    def list_tasks(
        self: _Transactions,
        owner: str | None,
        status: TaskStatus | None,
        type: str | None,
        limit: int,
        marker: str | None,
        newest_first: bool,
    ) -> Deferred[builtins.list[Task]]:
        def txn(connection: Connection) -> builtins.list[Task]:
            statement = _SELECT.where(tasks.c.deleted == false())
            if owner is not None:
                statement = statement.where(tasks.c.owner == owner)
            if status is not None:
                statement = statement.where(tasks.c.status == status.value)
            if type is not None:
                statement = statement.where(tasks.c.type == type)
            if marker is not None:
                found = connection.execute(
                    select(tasks.c.created_at, tasks.c.id).where(tasks.c.id == marker)
                ).first()
                if found is None:
                    raise BadRequest(f"Invalid marker. Task {marker} could not be found.")
                at, key = found
                when, ident = tasks.c.created_at, tasks.c.id
                if newest_first:
                    statement = statement.where((when < at) | ((when == at) & (ident < key)))
                else:
                    statement = statement.where((when > at) | ((when == at) & (ident > key)))
            order = (
                (tasks.c.created_at.desc(), tasks.c.id.desc())
                if newest_first
                else (tasks.c.created_at, tasks.c.id)
            )
            statement = statement.order_by(*order).limit(limit)
            return [_task(row) for row in connection.execute(statement)]

        return self._transaction("list_tasks", txn)

    def purge_tasks(self: _Transactions, expired_before: datetime) -> Deferred[int]:
        def txn(connection: Connection) -> int:
            done = connection.execute(
                delete(tasks).where(
                    tasks.c.status.in_([TaskStatus.SUCCESS.value, TaskStatus.FAILURE.value]),
                    tasks.c.expires_at.is_not(None),
                    tasks.c.expires_at < expired_before,
                )
            )
            return int(done.rowcount or 0)

        return self._transaction("purge_tasks", txn, write=True)

    def unfinished_tasks(
        self: _Transactions,
    ) -> Deferred[builtins.list[tuple[Task, datetime | None]]]:
        def txn(connection: Connection) -> builtins.list[tuple[Task, datetime | None]]:
            seen = {
                row[0]: _when(row[1])
                for row in connection.execute(select(nodes.c.id, nodes.c.heartbeat_at))
            }
            statement = _SELECT.where(
                tasks.c.deleted == false(),
                tasks.c.status.in_([TaskStatus.PENDING.value, TaskStatus.PROCESSING.value]),
            ).order_by(tasks.c.created_at, tasks.c.id)
            found = [_task(row) for row in connection.execute(statement)]
            return [
                (task, seen.get(claim_node(task.node)) if task.node else None) for task in found
            ]

        return self._transaction("unfinished_tasks", txn)


__all__ = ["SQLTasks"]
