"""
The metadata definitions catalog in the metadata database: ``IMetadefStore``'s half of
``SQLMetadataStore``.

The catalog shares the images' database (one backup holds both, one migration history), so its
methods live on the same store, written here as a mixin as the tasks' are.  Each operation is
one named transaction that reads the namespace, lets the caller's guard judge it, and acts.
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any, Protocol, TypeVar

from sqlalchemy import (
    ColumnElement,
    Integer,
    Table,
    and_,
    cast,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Row
from sqlalchemy.exc import IntegrityError
from twisted.internet.defer import Deferred

from ..errors import Duplicate, Forbidden, NamespaceNotFound, NotFound
from ..metadefs.model import (
    Association,
    CatalogScope,
    Content,
    Definition,
    Kind,
    Listed,
    LoadMode,
    LoadReport,
    Namespace,
    NamespaceQuery,
    NamespaceVisibility,
    ResourceType,
    SortDir,
    TagQuery,
)
from .tables import (
    metadef_associations,
    metadef_definitions,
    metadef_namespaces,
    metadef_resource_types,
)

T = TypeVar("T")
Guard = Callable[[Namespace], None]

_ns = metadef_namespaces
_defs = metadef_definitions
_types = metadef_resource_types
_assoc = metadef_associations

#: Glance's words for a definition that is not there, that exists already, and a rename onto
#: another's name (``glance.common.exception``, ``glance.db.sqlalchemy.metadef_api``).
_MISSING = {
    Kind.OBJECT: "Could not find metadata object {name}",
    Kind.PROPERTY: "Could not find property {name}",
    Kind.TAG: "Could not find metadata tag {name}",
}
_TAKEN = {
    Kind.OBJECT: "A metadata definition object with name={name} already exists in "
    "namespace={namespace}.",
    Kind.PROPERTY: "A metadata definition property with name={name} already exists in "
    "namespace={namespace}.",
    Kind.TAG: "A metadata tag with name={name} already exists in namespace={namespace}. "
    "(Please note that metadata tag names are case insensitive).",
}
_RENAMED_ONTO = {
    Kind.OBJECT: "Invalid update. It would result in a duplicate metadata definition object "
    "with the same name={name} in namespace={namespace}.",
    Kind.PROPERTY: "Invalid update. It would result in a duplicate metadata definition "
    "property with the same name={name} in namespace={namespace}.",
    Kind.TAG: _TAKEN[Kind.TAG],
}

#: Nullable columns sort as empty text, so that a page's marker always has a place.
_SORTABLE: dict[str, ColumnElement[Any]] = {
    "namespace": _ns.c.namespace,
    "display_name": func.coalesce(_ns.c.display_name, ""),
    "description": func.coalesce(_ns.c.description, ""),
    "visibility": _ns.c.visibility,
    # As a number: a boolean column cannot be compared with < and > (a marker's keyset).
    "protected": cast(_ns.c.protected, Integer),
    "owner": func.coalesce(_ns.c.owner, ""),
    "created_at": _ns.c.created_at,
    "updated_at": _ns.c.updated_at,
}
_TAG_SORTABLE: dict[str, ColumnElement[Any]] = {
    "name": _defs.c.name,
    "created_at": _defs.c.created_at,
    "updated_at": _defs.c.updated_at,
}


def namespace_missing(name: str) -> NotFound:
    return NamespaceNotFound(name)


def _when(value: datetime | str) -> datetime:
    """A stored timestamp (SQLite's driver may return the text it stored)."""
    return datetime.fromisoformat(value) if isinstance(value, str) else value


def _namespace(row: Row[Any]) -> Namespace:
    m = row._mapping
    return Namespace(
        namespace=m["namespace"],
        display_name=m["display_name"],
        description=m["description"],
        visibility=NamespaceVisibility(m["visibility"]),
        protected=bool(m["protected"]),
        owner=m["owner"],
        created_at=_when(m["created_at"]),
        updated_at=_when(m["updated_at"]),
    )


def _namespace_values(namespace: Namespace) -> dict[str, Any]:
    return {
        "namespace": namespace.namespace,
        "display_name": namespace.display_name,
        "description": namespace.description,
        "visibility": namespace.visibility.value,
        "protected": namespace.protected,
        "owner": namespace.owner,
        "created_at": namespace.created_at,
        "updated_at": namespace.updated_at,
    }


def _definition(row: Row[Any]) -> Definition:
    m = row._mapping
    return Definition(
        kind=Kind(m["kind"]),
        name=m["name"],
        body=json.loads(m["body"]),
        created_at=_when(m["created_at"]),
        updated_at=_when(m["updated_at"]),
    )


def _definition_values(namespace_id: int, definition: Definition) -> dict[str, Any]:
    return {
        "namespace_id": namespace_id,
        "kind": definition.kind.value,
        "name": definition.name,
        "body": json.dumps(definition.body, ensure_ascii=False),
        "created_at": definition.created_at,
        "updated_at": definition.updated_at,
    }


_ASSOCIATION_COLUMNS = (
    _types.c.name, _assoc.c.prefix, _assoc.c.properties_target, _assoc.c.created_at,
    _assoc.c.updated_at,
)


def _association(row: Sequence[Any]) -> Association:
    name, prefix, target, created, updated = row
    return Association(
        name=name, prefix=prefix, properties_target=target, created_at=_when(created),
        updated_at=_when(updated),
    )


def _after(
    pairs: Sequence[tuple[ColumnElement[Any], Any]], descending: bool
) -> ColumnElement[bool]:
    """The rows after a marker whose sort values are ``pairs``' (keyset paging)."""
    condition: ColumnElement[bool] | None = None
    for column, value in reversed(pairs):
        beyond = column < value if descending else column > value
        condition = beyond if condition is None else or_(
            beyond, and_(column == value, condition)
        )
    assert condition is not None
    return condition


class _Transactions(Protocol):
    def _transaction(
        self, name: str, fn: Callable[[Connection], T], write: bool = False
    ) -> Deferred[T]: ...


def _row_of(
    connection: Connection, name: str, guard: Guard | None, for_update: bool = False
) -> tuple[int, Namespace]:
    """A namespace's id and record, judged by ``guard``; ``NotFound`` if it is not there."""
    statement = select(_ns).where(_ns.c.namespace == name)
    if for_update:
        statement = statement.with_for_update()
    row = connection.execute(statement).first()
    if row is None:
        raise namespace_missing(name)
    namespace = _namespace(row)
    if guard is not None:
        guard(namespace)
    return int(row._mapping["id"]), namespace


def _associations_of(connection: Connection, namespace_id: int) -> builtins.list[Association]:
    statement = (
        select(*_ASSOCIATION_COLUMNS)
        .join_from(_assoc, _types, _assoc.c.resource_type_id == _types.c.id)
        .where(_assoc.c.namespace_id == namespace_id)
        .order_by(_assoc.c.created_at, _types.c.id)
    )
    return [_association(row) for row in connection.execute(statement)]


def _find_definition(
    connection: Connection, namespace_id: int, namespace: str, kind: Kind, name: str
) -> Row[Any]:
    row = connection.execute(
        select(_defs).where(
            _defs.c.namespace_id == namespace_id, _defs.c.kind == kind.value,
            _defs.c.name == name,
        )
    ).first()
    if row is None:
        raise NotFound(_MISSING[kind].format(name=name, namespace=namespace))
    return row


def _names_taken(
    connection: Connection, namespace_id: int, kind: Kind, names: Iterable[str]
) -> set[str]:
    wanted = list(names)
    if not wanted:
        return set()
    rows = connection.execute(
        select(_defs.c.name).where(
            _defs.c.namespace_id == namespace_id, _defs.c.kind == kind.value,
            _defs.c.name.in_(wanted),
        )
    )
    return {row[0] for row in rows}


def _insert_definitions(
    connection: Connection, namespace_id: int, namespace: str, definitions: Sequence[Definition]
) -> None:
    """Insert definitions, refusing a name taken in the namespace or twice in the batch."""
    seen: set[tuple[Kind, str]] = set()
    for definition in definitions:
        key = (definition.kind, definition.name)
        if key in seen:
            raise Duplicate(
                _TAKEN[definition.kind].format(name=definition.name, namespace=namespace)
            )
        seen.add(key)
    for kind in Kind:
        names = [d.name for d in definitions if d.kind is kind]
        taken = _names_taken(connection, namespace_id, kind, names)
        if taken:
            clash = next(n for n in names if n in taken)
            raise Duplicate(_TAKEN[kind].format(name=clash, namespace=namespace))
    if definitions:
        try:
            connection.execute(
                insert(_defs), [_definition_values(namespace_id, d) for d in definitions]
            )
        except IntegrityError:  # another writer took a name meanwhile
            first = definitions[0]
            raise Duplicate(
                _TAKEN[first.kind].format(name=first.name, namespace=namespace)
            ) from None


def _insert_if_absent(connection: Connection, table: Table, values: dict[str, Any]) -> None:
    """Insert a row unless one with the same unique key exists (made by another writer since
    this transaction looked, say): ``ON CONFLICT DO NOTHING``, which both databases have."""
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    connection.execute(dialect.insert(table).values(**values).on_conflict_do_nothing())


def _resource_type_id(
    connection: Connection,
    name: str,
    at: datetime,
    protected: bool = False,
    create: bool = True,
) -> int:
    """The id of resource type ``name``, made if it does not exist and ``create`` allows (as
    Glance does when a namespace is associated with a type it has not seen)."""
    statement = select(_types.c.id, _types.c.protected).where(_types.c.name == name)
    row = connection.execute(statement).first()
    if row is None:
        if not create:
            raise Forbidden(f"You are not authorized to create resource type {name}.")
        values = {"name": name, "protected": protected, "created_at": at, "updated_at": at}
        _insert_if_absent(connection, _types, values)
        row = connection.execute(statement).one()
    if protected and not row[1]:
        connection.execute(update(_types).where(_types.c.id == row[0]).values(protected=True))
    return int(row[0])


def _insert_association(
    connection: Connection,
    namespace_id: int,
    namespace: str,
    association: Association,
    protected: bool = False,
    create_types: bool = True,
) -> None:
    type_id = _resource_type_id(
        connection, association.name, association.created_at, protected, create_types
    )
    exists = connection.execute(
        select(_assoc.c.namespace_id).where(
            _assoc.c.namespace_id == namespace_id, _assoc.c.resource_type_id == type_id
        )
    ).first()
    if exists is not None:
        raise Duplicate(
            "The metadata definition resource-type association of "
            f"resource-type={association.name} to namespace={namespace} already exists."
        )
    connection.execute(
        insert(_assoc).values(
            namespace_id=namespace_id,
            resource_type_id=type_id,
            prefix=association.prefix,
            properties_target=association.properties_target,
            created_at=association.created_at,
            updated_at=association.updated_at,
        )
    )


def _insert_namespace(
    connection: Connection, content: Content, protected_types: bool, create_types: bool = True
) -> int:
    name = content.namespace.namespace
    try:
        made = connection.execute(insert(_ns).values(**_namespace_values(content.namespace)))
    except IntegrityError:
        raise Duplicate(f"The metadata definition namespace={name} already exists.") from None
    key = made.inserted_primary_key
    assert key is not None
    namespace_id = int(key[0])
    for association in content.associations:
        _insert_association(
            connection, namespace_id, name, association, protected_types, create_types
        )
    _insert_definitions(connection, namespace_id, name, content.definitions)
    return namespace_id


def _content_of(connection: Connection, namespace_id: int, namespace: Namespace) -> Content:
    """A namespace's content: objects and properties by name, tags newest first (as Glance
    shows them)."""
    rows = connection.execute(
        select(_defs).where(_defs.c.namespace_id == namespace_id).order_by(_defs.c.id)
    )
    found = [_definition(row) for row in rows]
    tags = [d for d in reversed(found) if d.kind is Kind.TAG]
    named = sorted((d for d in found if d.kind is not Kind.TAG), key=lambda d: (d.kind, d.name))
    return Content(
        namespace=namespace,
        associations=tuple(_associations_of(connection, namespace_id)),
        definitions=tuple(named + tags),
    )


def _merge(
    connection: Connection, namespace_id: int, content: Content, prefer_new: bool
) -> None:
    """Add what ``content`` has and the namespace lacks; with ``prefer_new``, also replace
    what both have (Glance's ``--merge`` and ``--prefer_new``)."""
    name = content.namespace.namespace
    if prefer_new:
        values = _namespace_values(content.namespace)
        del values["created_at"]
        connection.execute(update(_ns).where(_ns.c.id == namespace_id).values(**values))
    present = {a.name: a for a in _associations_of(connection, namespace_id)}
    for association in content.associations:
        if association.name not in present:
            _insert_association(connection, namespace_id, name, association, protected=True)
        elif prefer_new:
            type_id = _resource_type_id(connection, association.name, association.created_at, True)
            connection.execute(
                update(_assoc)
                .where(_assoc.c.namespace_id == namespace_id, _assoc.c.resource_type_id == type_id)
                .values(prefix=association.prefix, properties_target=association.properties_target,
                        updated_at=association.updated_at)
            )
    missing: list[Definition] = []
    for kind in Kind:
        ours = content.of(kind)
        taken = _names_taken(connection, namespace_id, kind, (d.name for d in ours))
        missing.extend(d for d in ours if d.name not in taken)
        if prefer_new:
            for definition in ours:
                if definition.name in taken:
                    connection.execute(
                        update(_defs)
                        .where(_defs.c.namespace_id == namespace_id, _defs.c.kind == kind.value,
                               _defs.c.name == definition.name)
                        .values(body=json.dumps(definition.body, ensure_ascii=False),
                                updated_at=definition.updated_at)
                    )
    _insert_definitions(connection, namespace_id, name, missing)


class SQLMetadefs:
    """``IMetadefStore`` over the store's ``_transaction``."""

    # -- namespaces --------------------------------------------------------------------

    def list_namespaces(
        self: _Transactions, scope: CatalogScope, query: NamespaceQuery
    ) -> Deferred[builtins.list[Listed]]:
        def txn(connection: Connection) -> builtins.list[Listed]:
            seen: list[ColumnElement[bool]] = []
            if not scope.everything:
                public = _ns.c.visibility == NamespaceVisibility.PUBLIC.value
                seen.append(
                    public if scope.project is None else or_(public, _ns.c.owner == scope.project)
                )
            statement = select(_ns).where(*seen)
            if query.visibility is not None:
                statement = statement.where(_ns.c.visibility == query.visibility.value)
            if query.resource_types is not None:
                associated = (
                    select(_assoc.c.namespace_id)
                    .join_from(_assoc, _types, _assoc.c.resource_type_id == _types.c.id)
                    .where(_types.c.name.in_(query.resource_types))
                )
                statement = statement.where(_ns.c.id.in_(associated))
            keys = [_SORTABLE[query.sort_key]]
            if query.sort_key != "created_at":
                keys.append(_ns.c.created_at)
            keys.append(_ns.c.id)
            descending = query.sort_dir is SortDir.DESC
            if query.marker is not None:
                # The marker must be a namespace the caller may see (Glance looks it up).
                marker = connection.execute(
                    select(*keys).where(_ns.c.namespace == query.marker, *seen)
                ).first()
                if marker is None:
                    raise namespace_missing(query.marker)
                statement = statement.where(
                    _after(list(zip(keys, marker, strict=True)), descending)
                )
            order = [k.desc() if descending else k.asc() for k in keys]
            rows = connection.execute(statement.order_by(*order).limit(query.limit)).all()
            ids = [int(row._mapping["id"]) for row in rows]
            associations: dict[int, builtins.list[Association]] = {i: [] for i in ids}
            if ids:
                found = connection.execute(
                    select(_assoc.c.namespace_id, *_ASSOCIATION_COLUMNS)
                    .join_from(_assoc, _types, _assoc.c.resource_type_id == _types.c.id)
                    .where(_assoc.c.namespace_id.in_(ids))
                    .order_by(_assoc.c.created_at, _types.c.id)
                )
                for row in found:
                    associations[int(row[0])].append(_association(tuple(row)[1:]))
            return [
                Listed(namespace=_namespace(row), associations=tuple(associations[i]))
                for row, i in zip(rows, ids, strict=True)
            ]

        return self._transaction("list_metadef_namespaces", txn)

    def content(self: _Transactions, name: str, guard: Guard) -> Deferred[Content]:
        def txn(connection: Connection) -> Content:
            namespace_id, namespace = _row_of(connection, name, guard)
            return _content_of(connection, namespace_id, namespace)

        return self._transaction("show_metadef_namespace", txn)

    def create_namespace(
        self: _Transactions, content: Content, create_types: bool = True
    ) -> Deferred[Content]:
        def txn(connection: Connection) -> Content:
            namespace_id = _insert_namespace(
                connection, content, protected_types=False, create_types=create_types
            )
            return _content_of(connection, namespace_id, content.namespace)

        return self._transaction("create_metadef_namespace", txn, write=True)

    def update_namespace(
        self: _Transactions, name: str, guard: Guard, change: Callable[[Namespace], Namespace]
    ) -> Deferred[Namespace]:
        def txn(connection: Connection) -> Namespace:
            namespace_id, old = _row_of(connection, name, guard, for_update=True)
            new = change(old)
            if new.namespace != old.namespace:
                taken = connection.execute(
                    select(_ns.c.id).where(_ns.c.namespace == new.namespace)
                ).first()
                if taken is not None:
                    raise Duplicate(
                        "Invalid update. It would result in a duplicate metadata definition "
                        f"namespace with the same name of {new.namespace}"
                    )
            values = _namespace_values(new)
            del values["created_at"]
            try:
                connection.execute(update(_ns).where(_ns.c.id == namespace_id).values(**values))
            except IntegrityError:  # renamed onto a namespace made meanwhile
                raise Duplicate(
                    "Invalid update. It would result in a duplicate metadata definition "
                    f"namespace with the same name of {new.namespace}"
                ) from None
            return new

        return self._transaction("update_metadef_namespace", txn, write=True)

    def delete_namespace(self: _Transactions, name: str, guard: Guard) -> Deferred[None]:
        def txn(connection: Connection) -> None:
            namespace_id, _ = _row_of(connection, name, guard, for_update=True)
            connection.execute(delete(_ns).where(_ns.c.id == namespace_id))

        return self._transaction("delete_metadef_namespace", txn, write=True)

    # -- objects, properties, tags ----------------------------------------------------------

    def definitions(
        self: _Transactions,
        namespace: str,
        kind: Kind,
        guard: Guard,
        query: TagQuery | None = None,
    ) -> Deferred[builtins.list[Definition]]:
        def txn(connection: Connection) -> builtins.list[Definition]:
            namespace_id, _ = _row_of(connection, namespace, guard)
            statement = select(_defs).where(
                _defs.c.namespace_id == namespace_id, _defs.c.kind == kind.value
            )
            if query is None:
                # By name, as Glance lists objects and properties (in code point order, the
                # same on every database whatever its collation).
                rows = connection.execute(statement)
                return sorted((_definition(row) for row in rows), key=lambda d: d.name)
            else:
                keys = [_TAG_SORTABLE[query.sort_key]]
                if query.sort_key != "created_at":
                    keys.append(_defs.c.created_at)
                keys.append(_defs.c.id)
                descending = query.sort_dir is SortDir.DESC
                if query.marker is not None:
                    marker = _find_definition(
                        connection, namespace_id, namespace, kind, query.marker
                    )
                    values = [marker._mapping[str(k.key)] for k in keys]
                    statement = statement.where(
                        _after(list(zip(keys, values, strict=True)), descending)
                    )
                statement = statement.order_by(*(k.desc() if descending else k.asc() for k in keys))
                if query.limit is not None:
                    statement = statement.limit(query.limit)
            return [_definition(row) for row in connection.execute(statement)]

        return self._transaction(f"list_metadef_{kind.value}", txn)

    def definition(
        self: _Transactions, namespace: str, kind: Kind, name: str, guard: Guard
    ) -> Deferred[Definition]:
        def txn(connection: Connection) -> Definition:
            namespace_id, _ = _row_of(connection, namespace, guard)
            return _definition(_find_definition(connection, namespace_id, namespace, kind, name))

        return self._transaction(f"show_metadef_{kind.singular}", txn)

    def add_definitions(
        self: _Transactions,
        namespace: str,
        definitions: Sequence[Definition],
        guard: Guard,
        replace_kind: Kind | None = None,
    ) -> Deferred[builtins.list[Definition]]:
        def txn(connection: Connection) -> builtins.list[Definition]:
            namespace_id, _ = _row_of(connection, namespace, guard, for_update=True)
            if replace_kind is not None:
                connection.execute(
                    delete(_defs).where(
                        _defs.c.namespace_id == namespace_id, _defs.c.kind == replace_kind.value
                    )
                )
            _insert_definitions(connection, namespace_id, namespace, definitions)
            return builtins.list(definitions)

        kinds = {d.kind.singular for d in definitions} or {"definition"}
        return self._transaction(f"create_metadef_{'_'.join(sorted(kinds))}", txn, write=True)

    def replace_definition(
        self: _Transactions,
        namespace: str,
        kind: Kind,
        name: str,
        guard: Guard,
        change: Callable[[Definition], Definition],
    ) -> Deferred[Definition]:
        def txn(connection: Connection) -> Definition:
            namespace_id, _ = _row_of(connection, namespace, guard, for_update=True)
            row = _find_definition(connection, namespace_id, namespace, kind, name)
            old = _definition(row)
            new = change(old)
            if new.name != old.name and _names_taken(connection, namespace_id, kind, [new.name]):
                raise Duplicate(_RENAMED_ONTO[kind].format(name=new.name, namespace=namespace))
            values = _definition_values(namespace_id, new)
            del values["created_at"]
            try:
                connection.execute(
                    update(_defs).where(_defs.c.id == row._mapping["id"]).values(**values)
                )
            except IntegrityError:
                raise Duplicate(
                    _RENAMED_ONTO[kind].format(name=new.name, namespace=namespace)
                ) from None
            return new

        return self._transaction(f"update_metadef_{kind.singular}", txn, write=True)

    def remove_definitions(
        self: _Transactions,
        namespace: str,
        kind: Kind,
        guard: Guard,
        name: str | None = None,
        protect: Guard | None = None,
    ) -> Deferred[None]:
        def txn(connection: Connection) -> None:
            namespace_id, record = _row_of(connection, namespace, guard, for_update=True)
            statement = delete(_defs).where(
                _defs.c.namespace_id == namespace_id, _defs.c.kind == kind.value
            )
            if name is not None:
                row = _find_definition(connection, namespace_id, namespace, kind, name)
                statement = delete(_defs).where(_defs.c.id == row._mapping["id"])
            if protect is not None:
                protect(record)
            connection.execute(statement)

        which = kind.value if name is None else kind.singular
        return self._transaction(f"delete_metadef_{which}", txn, write=True)

    # -- resource types -----------------------------------------------------------------------

    def resource_types(self: _Transactions) -> Deferred[builtins.list[ResourceType]]:
        def txn(connection: Connection) -> builtins.list[ResourceType]:
            rows = connection.execute(select(_types).order_by(_types.c.id))
            return [
                ResourceType(
                    name=row._mapping["name"],
                    protected=bool(row._mapping["protected"]),
                    created_at=_when(row._mapping["created_at"]),
                    updated_at=_when(row._mapping["updated_at"]),
                )
                for row in rows
            ]

        return self._transaction("list_metadef_resource_types", txn)

    def associations(
        self: _Transactions, namespace: str, guard: Guard
    ) -> Deferred[builtins.list[Association]]:
        def txn(connection: Connection) -> builtins.list[Association]:
            namespace_id, _ = _row_of(connection, namespace, guard)
            return _associations_of(connection, namespace_id)

        return self._transaction("list_metadef_associations", txn)

    def associate(
        self: _Transactions,
        namespace: str,
        association: Association,
        guard: Guard,
        create_types: bool = True,
    ) -> Deferred[Association]:
        def txn(connection: Connection) -> Association:
            namespace_id, _ = _row_of(connection, namespace, guard, for_update=True)
            try:
                _insert_association(
                    connection, namespace_id, namespace, association, create_types=create_types
                )
            except IntegrityError:  # the same association made meanwhile
                raise Duplicate(
                    "The metadata definition resource-type association of "
                    f"resource-type={association.name} to namespace={namespace} already exists."
                ) from None
            return association

        return self._transaction("create_metadef_association", txn, write=True)

    def dissociate(
        self: _Transactions,
        namespace: str,
        resource_type: str,
        guard: Guard,
        protect: Guard | None = None,
    ) -> Deferred[None]:
        def txn(connection: Connection) -> None:
            namespace_id, record = _row_of(connection, namespace, guard, for_update=True)
            found = connection.execute(
                select(_assoc.c.resource_type_id)
                .join_from(_assoc, _types, _assoc.c.resource_type_id == _types.c.id)
                .where(_assoc.c.namespace_id == namespace_id, _types.c.name == resource_type)
            ).scalar()
            if found is None:
                raise NotFound(f"Failed to find resource type {resource_type} to delete")
            if protect is not None:
                protect(record)
            connection.execute(
                delete(_assoc).where(
                    _assoc.c.namespace_id == namespace_id, _assoc.c.resource_type_id == found
                )
            )

        return self._transaction("delete_metadef_association", txn, write=True)

    # -- definition files -----------------------------------------------------------------------

    def load(
        self: _Transactions, contents: Sequence[Content], mode: LoadMode
    ) -> Deferred[LoadReport]:
        def txn(connection: Connection) -> LoadReport:
            loaded: list[str] = []
            merged: list[str] = []
            skipped: list[str] = []
            for content in contents:
                name = content.namespace.namespace
                row = connection.execute(
                    select(_ns.c.id).where(_ns.c.namespace == name)
                ).first()
                if row is not None and mode is LoadMode.OVERWRITE:
                    connection.execute(delete(_ns).where(_ns.c.id == row[0]))
                    row = None
                if row is None:
                    _insert_namespace(connection, content, protected_types=True)
                    loaded.append(name)
                elif mode is LoadMode.SKIP:
                    skipped.append(name)
                else:
                    _merge(connection, int(row[0]), content, mode is LoadMode.PREFER_NEW)
                    merged.append(name)
            return LoadReport(loaded=tuple(loaded), merged=tuple(merged), skipped=tuple(skipped))

        return self._transaction("load_metadefs", txn, write=True)

    def unload(self: _Transactions, namespaces: Sequence[str] | None = None) -> Deferred[int]:
        def txn(connection: Connection) -> int:
            if namespaces is None:
                done = connection.execute(delete(_ns))
                connection.execute(delete(_types))
                return int(done.rowcount or 0)
            count = 0
            for name in namespaces:
                done = connection.execute(delete(_ns).where(_ns.c.namespace == name))
                count += int(done.rowcount or 0)
            return count

        return self._transaction("unload_metadefs", txn, write=True)

    def export(self: _Transactions) -> Deferred[builtins.list[Content]]:
        def txn(connection: Connection) -> builtins.list[Content]:
            rows = connection.execute(select(_ns).order_by(_ns.c.namespace)).all()
            return [
                _content_of(connection, int(row._mapping["id"]), _namespace(row)) for row in rows
            ]

        return self._transaction("export_metadefs", txn)


__all__ = ["SQLMetadefs", "namespace_missing"]
