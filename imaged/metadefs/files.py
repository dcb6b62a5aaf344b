"""
Glance's metadata definition files: JSON namespaces to load into the catalog, and back out.

The format is Glance's ``etc/metadefs/*.json`` (what ``glance-manage db_load_metadefs`` reads
and ``db_export_metadefs`` writes): a namespace's attributes with its resource type
associations, properties, objects and tags.  ``SHIPPED`` is the directory of the definitions
Glance ships, packaged with imaged.  A file that does not hold a valid namespace stops a load
with its name and the reason: nothing is loaded from a set with a bad file.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from datetime import datetime
from importlib import resources
from typing import Any

from .. import jsontext
from ..errors import ImageServiceError
from . import schemas
from .model import (
    Association,
    Content,
    Definition,
    Kind,
    Namespace,
    NamespaceVisibility,
)

#: Where the shipped definitions are (a directory inside the installed package).
SHIPPED = str(resources.files(__package__).joinpath("definitions"))

#: Who owns a loaded namespace that names no owner (Glance's loader says ``admin``).
DEFAULT_OWNER = "admin"


class DefinitionFileError(Exception):
    """A definition file that cannot be loaded: its path and why."""


def _files(path: str) -> list[str]:
    if os.path.isfile(path):
        return [path]
    try:
        names = sorted(n for n in os.listdir(path) if n.endswith(".json"))
    except OSError as e:
        raise DefinitionFileError(f"{path}: {e.strerror}") from None
    if not names:
        raise DefinitionFileError(f"{path}: no .json definition files")
    return [os.path.join(path, n) for n in names]


def content_of(document: Any, now: datetime) -> Content:
    """The namespace one definition file describes, checked as the API checks a create."""
    if isinstance(document, dict):
        # Glance's exports write nulls for what a namespace lacks, and other tools' carry the
        # read-only attributes too: neither is for us to load.
        document = {k: v for k, v in document.items()
                    if v is not None and k not in ("created_at", "updated_at", "self", "schema")}
    raw = schemas.validate("namespace", document)
    check = schemas.check_name
    name = check(raw["namespace"], "the namespace", "namespace")
    definitions: list[Definition] = []
    for key, value in (raw.get("properties") or {}).items():
        check(key, "a property name", "namespace")
        definitions.append(Definition(Kind.PROPERTY, key, now, now, schemas.property_body(value)))
    for obj in raw.get("objects") or ():
        properties = obj.get("properties") or {}
        for key in properties:
            check(key, "an object's property name", "namespace", addressed=False)
        body = {
            "description": obj.get("description"),
            "required": obj.get("required"),
            "properties": {k: schemas.property_body(v) for k, v in properties.items()},
        }
        object_name = check(obj.get("name"), "an object's name", "namespace")
        definitions.append(Definition(Kind.OBJECT, object_name, now, now, body))
    for tag in raw.get("tags") or ():
        tag_name = check(tag.get("name"), "a tag's name", "namespace")
        definitions.append(Definition(Kind.TAG, tag_name, now, now))
    associations = []
    for association in raw.get("resource_type_associations") or ():
        extra = {
            key: check(association[key], f"an association's {key}", "namespace", addressed=False)
            for key in ("prefix", "properties_target") if association.get(key) is not None
        }
        associations.append(Association(
            name=check(association.get("name"), "a resource type's name", "namespace"),
            created_at=now, updated_at=now, **extra,
        ))
    return Content(
        namespace=Namespace(
            namespace=name,
            display_name=raw.get("display_name"),
            description=raw.get("description"),
            visibility=NamespaceVisibility(raw.get("visibility") or "private"),
            protected=bool(raw.get("protected")),
            owner=raw.get("owner", DEFAULT_OWNER),
            created_at=now,
            updated_at=now,
        ),
        associations=tuple(associations),
        definitions=tuple(definitions),
    )


def read_definitions(path: str, now: datetime) -> list[Content]:
    """The namespaces of the ``.json`` files in directory ``path`` (or of file ``path``)."""
    contents: list[Content] = []
    seen: dict[str, str] = {}
    for file in _files(path):
        try:
            with open(file, encoding="utf-8") as f:
                document = jsontext.loads(f.read())
            content = content_of(document, now)
        except OSError as e:
            raise DefinitionFileError(f"{file}: {e.strerror}") from None
        except ValueError as e:
            raise DefinitionFileError(f"{file}: not JSON: {e}") from None
        except ImageServiceError as e:
            raise DefinitionFileError(f"{file}: {e.message}") from None
        name = content.namespace.namespace
        if name in seen:
            raise DefinitionFileError(f"{file}: namespace {name} is also in {seen[name]}")
        seen[name] = file
        contents.append(content)
    return contents


def file_document(content: Content) -> dict[str, Any]:
    """A namespace in the definition file format (Glance's export)."""
    namespace = content.namespace
    document: dict[str, Any] = {"namespace": namespace.namespace}
    for key in ("display_name", "description"):
        if getattr(namespace, key) is not None:
            document[key] = getattr(namespace, key)
    document["visibility"] = namespace.visibility.value
    document["protected"] = namespace.protected
    if namespace.owner is not None and namespace.owner != DEFAULT_OWNER:
        document["owner"] = namespace.owner
    document["resource_type_associations"] = [
        {k: v for k, v in (("name", a.name), ("prefix", a.prefix),
                           ("properties_target", a.properties_target)) if v is not None}
        for a in content.associations
    ]
    document["properties"] = {d.name: dict(d.body) for d in content.of(Kind.PROPERTY)}
    objects = []
    for d in content.of(Kind.OBJECT):
        obj: dict[str, Any] = {"name": d.name}
        obj.update({k: v for k, v in d.body.items() if v is not None})
        objects.append(obj)
    document["objects"] = objects
    document["tags"] = [{"name": d.name} for d in content.of(Kind.TAG)]
    return document


def file_name(content: Content) -> str:
    """Glance's export names a file after the namespace's display name, word characters
    only; the namespace's own name where that leaves nothing."""
    words = re.compile(r"[\W_]+", re.UNICODE)
    stem = words.sub("", content.namespace.display_name or "") or words.sub(
        "", content.namespace.namespace
    )
    return f"{stem or 'namespace'}.json"


def write_definitions(contents: Sequence[Content], directory: str) -> list[str]:
    """Write each namespace to its own file in ``directory``; the paths written."""
    os.makedirs(directory, exist_ok=True)
    written: list[str] = []
    taken: set[str] = set()
    for content in contents:
        name = file_name(content)
        stem, n = name[:-5], 2
        while name in taken:  # two display names that reduce to the same word
            name, n = f"{stem}{n}.json", n + 1
        taken.add(name)
        path = os.path.join(directory, name)
        with open(path, "w", encoding="utf-8") as f:
            json.dump(file_document(content), f, indent=4, ensure_ascii=False)
            f.write("\n")
        written.append(path)
    return written


__all__ = [
    "DEFAULT_OWNER",
    "SHIPPED",
    "DefinitionFileError",
    "content_of",
    "file_document",
    "read_definitions",
    "write_definitions",
]
