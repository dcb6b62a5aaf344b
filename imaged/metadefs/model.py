"""
Value types of the metadata definitions catalog: namespaces and what they hold.

A namespace (``OS::Compute::Libvirt``) holds named definitions of three kinds, objects,
properties and tags, and is associated with resource types (``OS::Glance::Image``) with an
optional prefix (``hw_``).  The three kinds share one shape here, ``Definition``: a name, a
JSON body and timestamps; what the body holds is the kind's (a property's JSON schema, an
object's description, required list and properties, nothing for a tag).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import attrs


class NamespaceVisibility(enum.StrEnum):
    PUBLIC = "public"
    PRIVATE = "private"


class Kind(enum.StrEnum):
    """The kinds of definition a namespace holds; the value is Glance's collection name."""

    OBJECT = "objects"
    PROPERTY = "properties"
    TAG = "tags"

    @property
    def singular(self) -> str:
        return {"objects": "object", "properties": "property", "tags": "tag"}[self.value]


@attrs.frozen
class Namespace:
    namespace: str
    created_at: datetime
    updated_at: datetime
    display_name: str | None = None
    description: str | None = None
    visibility: NamespaceVisibility = NamespaceVisibility.PRIVATE
    protected: bool = False
    owner: str | None = None


@attrs.frozen
class Definition:
    """An object, a property or a tag of a namespace (see the module's docstring)."""

    kind: Kind
    name: str
    created_at: datetime
    updated_at: datetime
    body: Mapping[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class Association:
    """A namespace's association with a resource type."""

    name: str
    created_at: datetime
    updated_at: datetime
    prefix: str | None = None
    properties_target: str | None = None


@attrs.frozen
class ResourceType:
    name: str
    created_at: datetime
    updated_at: datetime
    #: Loaded from definition files (Glance's "seeded-system type").
    protected: bool = False


@attrs.frozen
class Listed:
    """A namespace as lists show it: with its resource type associations."""

    namespace: Namespace
    associations: tuple[Association, ...] = ()


@attrs.frozen
class Content:
    """A namespace with everything in it: what ``show``, create-with-content and the
    definition files hold.  A store returns objects and properties by name and tags newest
    first, as Glance shows them."""

    namespace: Namespace
    associations: tuple[Association, ...] = ()
    definitions: tuple[Definition, ...] = ()

    def of(self, kind: Kind) -> tuple[Definition, ...]:
        return tuple(d for d in self.definitions if d.kind is kind)


@attrs.frozen
class NamespaceSpec:
    """A namespace's attributes as a caller gives them (create, or update's replacement)."""

    namespace: str
    display_name: str | None = None
    description: str | None = None
    visibility: NamespaceVisibility | None = None
    protected: bool | None = None
    owner: str | None = None


@attrs.frozen
class DefinitionSpec:
    kind: Kind
    name: str
    body: Mapping[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class AssociationSpec:
    name: str
    prefix: str | None = None
    properties_target: str | None = None


@attrs.frozen
class NewNamespace:
    """A namespace to create, with what it holds from the start (one request, as Glance's
    create)."""

    spec: NamespaceSpec
    associations: tuple[AssociationSpec, ...] = ()
    definitions: tuple[DefinitionSpec, ...] = ()


class SortDir(enum.StrEnum):
    ASC = "asc"
    DESC = "desc"


#: Namespace attributes a list may be sorted by (Glance sorts by any column).
NAMESPACE_SORT_KEYS = (
    "namespace", "display_name", "description", "visibility", "protected", "owner",
    "created_at", "updated_at",
)
#: Tag attributes a tag list may be sorted by.
TAG_SORT_KEYS = ("name", "created_at", "updated_at")


@attrs.frozen
class CatalogScope:
    """Which namespaces a caller may see: all (administrators), else the public ones and
    those its project owns."""

    everything: bool
    project: str | None


@attrs.frozen
class NamespaceQuery:
    limit: int
    marker: str | None = None
    sort_key: str = "created_at"
    sort_dir: SortDir = SortDir.DESC
    visibility: NamespaceVisibility | None = None
    #: Namespaces associated with any of these resource types.
    resource_types: tuple[str, ...] | None = None


@attrs.frozen
class TagQuery:
    limit: int | None = None
    #: The name of the tag the page starts after.
    marker: str | None = None
    sort_key: str = "created_at"
    sort_dir: SortDir = SortDir.DESC


class LoadMode(enum.Enum):
    """What loading a definition file does to a namespace that exists (Glance's
    ``db_load_metadefs`` flags)."""

    #: Leave it as it is.
    SKIP = "skip"
    #: Add what the file has and the namespace lacks.
    MERGE = "merge"
    #: Add what is missing and replace what both have with the file's.
    PREFER_NEW = "prefer-new"
    #: Remove the namespace and load the file's.
    OVERWRITE = "overwrite"


@attrs.frozen
class LoadReport:
    """What loading definition files did."""

    loaded: tuple[str, ...] = ()
    merged: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()


__all__ = [
    "NAMESPACE_SORT_KEYS",
    "TAG_SORT_KEYS",
    "Association",
    "AssociationSpec",
    "CatalogScope",
    "Content",
    "Definition",
    "DefinitionSpec",
    "Kind",
    "Listed",
    "LoadMode",
    "LoadReport",
    "Namespace",
    "NamespaceQuery",
    "NamespaceSpec",
    "NamespaceVisibility",
    "NewNamespace",
    "ResourceType",
    "SortDir",
    "TagQuery",
]
