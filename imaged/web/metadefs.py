"""
The metadata definitions catalog's routes (Glance's ``/v2/metadefs`` and its schemas), and
their wire format: request bodies to ``imaged.metadefs.model`` values, values to documents.

The routes join the one route table of ``imaged.web.app`` (``mount``): one Klein map, so
version negotiation, request ids, metrics labels and error rendering are the images' own.
Handlers take the ``ImagesAPI`` they are mounted on (``CatalogHost``) and call its
``IMetadefService``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from klein import Klein
from twisted.web.iweb import IRequest

from ..context import RequestContext
from ..errors import BadRequest, NotFound
from ..interfaces import IMetadefService
from ..metadefs import schemas
from ..metadefs.model import (
    NAMESPACE_SORT_KEYS,
    TAG_SORT_KEYS,
    Association,
    AssociationSpec,
    Content,
    Definition,
    DefinitionSpec,
    Kind,
    Listed,
    Namespace,
    NamespaceQuery,
    NamespaceSpec,
    NamespaceVisibility,
    NewNamespace,
    ResourceType,
    SortDir,
    TagQuery,
)
from ..quotas import Limits
from . import listing
from .responses import json_response, no_content, read_body, reject_body
from .wire import decode_json, header, isotime

NAMESPACES = "/v2/metadefs/namespaces"
SCHEMAS = "/v2/schemas/metadefs"


class CatalogHost(Protocol):
    """What the catalog's handlers need of the API they are mounted on."""

    @property
    def metadefs(self) -> IMetadefService: ...

    @property
    def limits(self) -> Limits: ...

    async def context(self, request: IRequest) -> RequestContext: ...

    def base_url(self, request: IRequest) -> str: ...


# -- documents ----------------------------------------------------------------------------


def _href(namespace: str, *rest: str) -> str:
    return "/".join((NAMESPACES, namespace, *rest))


def namespace_document(namespace: Namespace) -> dict[str, Any]:
    document: dict[str, Any] = {"namespace": namespace.namespace}
    for key in ("display_name", "description"):
        value = getattr(namespace, key)
        if value is not None:
            document[key] = value
    document["visibility"] = namespace.visibility.value
    document["protected"] = namespace.protected
    if namespace.owner is not None:
        document["owner"] = namespace.owner
    document["created_at"] = isotime(namespace.created_at)
    document["updated_at"] = isotime(namespace.updated_at)
    return document


def _linked(document: dict[str, Any], namespace: str) -> dict[str, Any]:
    document["self"] = _href(namespace)
    document["schema"] = f"{SCHEMAS}/namespace"
    return document


def association_document(association: Association) -> dict[str, Any]:
    document: dict[str, Any] = {"name": association.name}
    if association.prefix is not None:
        document["prefix"] = association.prefix
    if association.properties_target is not None:
        document["properties_target"] = association.properties_target
    document["created_at"] = isotime(association.created_at)
    document["updated_at"] = isotime(association.updated_at)
    return document


def property_document(definition: Definition, named: bool = True) -> dict[str, Any]:
    """A property; as a value of a namespace's ``properties`` map, without its name."""
    body = dict(definition.body)
    return {"name": definition.name, **body} if named else body


def object_document(namespace: str, definition: Definition) -> dict[str, Any]:
    body = definition.body
    document: dict[str, Any] = {
        "name": definition.name, "required": list(body.get("required") or [])
    }
    if body.get("description") is not None:
        document["description"] = body["description"]
    document["properties"] = dict(body.get("properties") or {})
    document["created_at"] = isotime(definition.created_at)
    document["updated_at"] = isotime(definition.updated_at)
    document["self"] = _href(namespace, "objects", definition.name)
    document["schema"] = f"{SCHEMAS}/object"
    return document


def tag_document(definition: Definition) -> dict[str, Any]:
    return {
        "name": definition.name,
        "created_at": isotime(definition.created_at),
        "updated_at": isotime(definition.updated_at),
    }


def content_document(content: Content) -> dict[str, Any]:
    """A namespace with everything in it (show, and create's answer)."""
    name = content.namespace.namespace
    document = namespace_document(content.namespace)
    if content.associations:
        document["resource_type_associations"] = [
            association_document(a) for a in content.associations
        ]
    properties = content.of(Kind.PROPERTY)
    if properties:
        document["properties"] = {d.name: property_document(d, named=False) for d in properties}
    objects = content.of(Kind.OBJECT)
    if objects:
        document["objects"] = [object_document(name, d) for d in objects]
    tags = content.of(Kind.TAG)
    if tags:
        document["tags"] = [{"name": d.name} for d in tags]
    return _linked(document, name)


def listed_document(listed: Listed) -> dict[str, Any]:
    document = namespace_document(listed.namespace)
    if listed.associations:
        document["resource_type_associations"] = [
            association_document(a) for a in listed.associations
        ]
    return _linked(document, listed.namespace.namespace)


def resource_type_document(resource_type: ResourceType) -> dict[str, Any]:
    return {
        "name": resource_type.name,
        "created_at": isotime(resource_type.created_at),
        "updated_at": isotime(resource_type.updated_at),
    }


# -- request bodies -------------------------------------------------------------------------


_name = schemas.check_name


def _optional(value: Any, what: str, schema: str) -> str | None:
    return None if value is None else _name(value, what, schema, addressed=False)


def _object_spec(raw: Mapping[str, Any], schema: str) -> DefinitionSpec:
    properties = raw.get("properties") or {}
    for name in properties:
        _name(name, "a property name", schema, addressed=False)
    body: dict[str, Any] = {
        "description": raw.get("description"),
        "required": list(raw["required"]) if raw.get("required") is not None else None,
        "properties": {name: schemas.property_body(value) for name, value in properties.items()},
    }
    return DefinitionSpec(Kind.OBJECT, _name(raw.get("name"), "an object's name", schema), body)


def _association_spec(raw: Mapping[str, Any], schema: str) -> AssociationSpec:
    return AssociationSpec(
        name=_name(raw.get("name"), "a resource type's name", schema),
        prefix=_optional(raw.get("prefix"), "a prefix", schema),
        properties_target=_optional(raw.get("properties_target"), "a properties target", schema),
    )


def decode_namespace(body: Any) -> NewNamespace:
    """A namespace to create (or, without its content, the replacement an update sends)."""
    raw = schemas.validate("namespace", body)
    visibility = raw.get("visibility")
    spec = NamespaceSpec(
        namespace=_name(raw["namespace"], "the namespace", "namespace"),
        display_name=raw.get("display_name"),
        description=raw.get("description"),
        visibility=NamespaceVisibility(visibility) if visibility else None,
        protected=raw.get("protected"),
        owner=raw.get("owner"),
    )
    definitions: list[DefinitionSpec] = []
    for name, value in (raw.get("properties") or {}).items():
        definitions.append(DefinitionSpec(
            Kind.PROPERTY, _name(name, "a property name", "namespace"), schemas.property_body(value)
        ))
    definitions.extend(_object_spec(o, "namespace") for o in raw.get("objects") or ())
    definitions.extend(
        DefinitionSpec(Kind.TAG, _name(t.get("name"), "a tag's name", "namespace"))
        for t in raw.get("tags") or ()
    )
    associations = tuple(
        _association_spec(a, "namespace") for a in raw.get("resource_type_associations") or ()
    )
    return NewNamespace(spec=spec, associations=associations, definitions=tuple(definitions))


def decode_object(body: Any) -> DefinitionSpec:
    raw = schemas.validate("object", body)
    for value in (raw.get("properties") or {}).values():
        schemas.validate("object property", value)
    return _object_spec(raw, "object")


def decode_property(body: Any) -> DefinitionSpec:
    raw = schemas.validate("property", body)
    return DefinitionSpec(
        Kind.PROPERTY,
        _name(raw["name"], "the property's name", "property"),
        schemas.property_body(raw),
    )


def decode_tag_name(name: str) -> str:
    schemas.validate("tag", {"name": name})
    return _name(name, "the tag's name", "tag")


def decode_tag(body: Any) -> DefinitionSpec:
    raw = schemas.validate("tag", body)
    return DefinitionSpec(Kind.TAG, _name(raw["name"], "the tag's name", "tag"))


def decode_tags(body: Any) -> list[str]:
    raw = schemas.validate("tags", body)
    return [_name(t["name"], "a tag's name", "tags") for t in raw.get("tags") or ()]


def decode_association(body: Any) -> AssociationSpec:
    return _association_spec(schemas.validate("resource_type_association", body),
                             "resource_type_association")


# -- query strings ----------------------------------------------------------------------------


def _one(params: Mapping[str, Sequence[str]], key: str) -> str | None:
    values = params.get(key)
    return values[-1] if values else None


def _limit(text: str) -> int:
    try:
        limit = int(text)
    except ValueError:
        raise BadRequest("limit param must be an integer") from None
    if limit < 0:
        raise BadRequest("limit param must be positive")
    return limit


def _sort(params: Mapping[str, Sequence[str]], keys: Sequence[str]) -> tuple[str, SortDir]:
    direction = _one(params, "sort_dir") or "desc"
    if direction not in ("asc", "desc"):
        raise BadRequest(f"Invalid sort direction: {direction}")
    key = _one(params, "sort_key") or "created_at"
    if key not in keys:
        raise BadRequest(f"Invalid sort key: {key}. It must be one of: {', '.join(keys)}.")
    return key, SortDir(direction)


def decode_namespace_query(params: Mapping[str, Sequence[str]], limits: Limits) -> NamespaceQuery:
    limit = _one(params, "limit")
    visibility = _one(params, "visibility")
    if visibility and visibility not in ("public", "private"):
        raise BadRequest(f"Invalid visibility value: {visibility}")
    types = _one(params, "resource_types")
    key, direction = _sort(params, NAMESPACE_SORT_KEYS)
    return NamespaceQuery(
        limit=min(limits.list_limit_max,
                  limits.list_limit_default if limit is None else _limit(limit)),
        marker=_one(params, "marker") or None,
        sort_key=key,
        sort_dir=direction,
        visibility=NamespaceVisibility(visibility) if visibility else None,
        resource_types=(
            tuple(t.strip() for t in types.split(",") if t.strip()) if types else None
        ),
    )


def decode_tag_query(params: Mapping[str, Sequence[str]], limits: Limits) -> TagQuery:
    limit = _one(params, "limit")
    key, direction = _sort(params, TAG_SORT_KEYS)
    chosen = _limit(limit) if limit else None
    return TagQuery(
        # "0" is a limit (an empty page), as Glance's; no limit is all of them.
        limit=None if chosen is None else min(chosen, limits.list_limit_max),
        marker=_one(params, "marker") or None,
        sort_key=key,
        sort_dir=direction,
    )


# -- routes -------------------------------------------------------------------------------------


def _service(host: CatalogHost) -> IMetadefService:
    return host.metadefs


def _body(request: IRequest) -> Any:
    return decode_json(read_body(request))


def _resource_type(params: Mapping[str, Sequence[str]]) -> str | None:
    return _one(params, "resource_type") or None


async def _read(
    host: CatalogHost, request: IRequest
) -> tuple[RequestContext, dict[str, list[str]]]:
    """The caller and the query of a route that takes no body."""
    context = await host.context(request)
    reject_body(request)
    return context, listing.decode_params(request.args)


async def list_namespaces(host: CatalogHost, request: IRequest) -> bytes:
    context, params = await _read(host, request)
    query = decode_namespace_query(params, host.limits)
    listed = await _service(host).list_namespaces(context, query)
    document: dict[str, Any] = {"namespaces": [listed_document(item) for item in listed]}
    last = listed[-1].namespace.namespace if listed else None
    links = listing.page_links(params, last, bool(listed) and len(listed) == query.limit,
                               base=NAMESPACES)
    if "next" in links:
        document["next"] = links["next"]
    document["schema"] = f"{SCHEMAS}/namespaces"
    document["first"] = links["first"]
    return json_response(request, document)


async def create_namespace(host: CatalogHost, request: IRequest) -> bytes:
    context = await host.context(request)
    new = decode_namespace(_body(request))
    content = await _service(host).create_namespace(context, new)
    location = host.base_url(request) + _href(content.namespace.namespace)
    request.setHeader(b"location", location.encode("utf-8"))
    return json_response(request, content_document(content), 201)


async def show_namespace(host: CatalogHost, request: IRequest, namespace: str) -> bytes:
    context, params = await _read(host, request)
    content = await _service(host).get_namespace(context, namespace, _resource_type(params))
    return json_response(request, content_document(content))


async def update_namespace(host: CatalogHost, request: IRequest, namespace: str) -> bytes:
    context = await host.context(request)
    spec = decode_namespace(_body(request)).spec
    updated = await _service(host).update_namespace(context, namespace, spec)
    return json_response(request, _linked(namespace_document(updated), updated.namespace))


async def delete_namespace(host: CatalogHost, request: IRequest, namespace: str) -> bytes:
    context, _ = await _read(host, request)
    await _service(host).delete_namespace(context, namespace)
    return no_content(request)


def _clear(kind: Kind) -> Callable[..., Any]:
    async def clear(host: CatalogHost, request: IRequest, namespace: str) -> bytes:
        context, _ = await _read(host, request)
        await _service(host).clear_namespace(context, namespace, kind)
        return no_content(request)

    clear.__name__ = f"delete_namespace_{kind.value}"
    return clear


async def list_objects(host: CatalogHost, request: IRequest, namespace: str) -> bytes:
    context, _ = await _read(host, request)
    found = await _service(host).list_definitions(context, namespace, Kind.OBJECT)
    # Glance's answer names the collection's schema without the leading slash.
    document = {"objects": [object_document(namespace, d) for d in found],
                "schema": "v2/schemas/metadefs/objects"}
    return json_response(request, document)


async def create_object(host: CatalogHost, request: IRequest, namespace: str) -> bytes:
    context = await host.context(request)
    made = await _service(host).add_definition(context, namespace, decode_object(_body(request)))
    return json_response(request, object_document(namespace, made), 201)


async def show_object(host: CatalogHost, request: IRequest, namespace: str, name: str) -> bytes:
    context, _ = await _read(host, request)
    found = await _service(host).get_definition(context, namespace, Kind.OBJECT, name)
    return json_response(request, object_document(namespace, found))


async def update_object(host: CatalogHost, request: IRequest, namespace: str, name: str) -> bytes:
    context = await host.context(request)
    spec = decode_object(_body(request))
    updated = await _service(host).update_definition(context, namespace, name, spec)
    return json_response(request, object_document(namespace, updated))


def _delete(kind: Kind) -> Callable[..., Any]:
    async def delete(host: CatalogHost, request: IRequest, namespace: str, name: str) -> bytes:
        context, _ = await _read(host, request)
        await _service(host).delete_definition(context, namespace, kind, name)
        return no_content(request)

    delete.__name__ = f"delete_{kind.singular}"
    return delete


async def list_properties(host: CatalogHost, request: IRequest, namespace: str) -> bytes:
    context, _ = await _read(host, request)
    found = await _service(host).list_definitions(context, namespace, Kind.PROPERTY)
    properties = {d.name: property_document(d) for d in found}
    return json_response(request, {"properties": properties})


async def create_property(host: CatalogHost, request: IRequest, namespace: str) -> bytes:
    context = await host.context(request)
    spec = decode_property(_body(request))
    made = await _service(host).add_definition(context, namespace, spec)
    return json_response(request, property_document(made), 201)


async def show_property(host: CatalogHost, request: IRequest, namespace: str, name: str) -> bytes:
    context, params = await _read(host, request)
    # Asked for by its prefixed name (``?resource_type=``), it is answered by its own.
    found = await _service(host).get_definition(
        context, namespace, Kind.PROPERTY, name, _resource_type(params)
    )
    return json_response(request, property_document(found))


async def update_property(
    host: CatalogHost, request: IRequest, namespace: str, name: str
) -> bytes:
    context = await host.context(request)
    spec = decode_property(_body(request))
    updated = await _service(host).update_definition(context, namespace, name, spec)
    return json_response(request, property_document(updated))


async def list_tags(host: CatalogHost, request: IRequest, namespace: str) -> bytes:
    context, params = await _read(host, request)
    query = decode_tag_query(params, host.limits)
    found = await _service(host).list_definitions(context, namespace, Kind.TAG, query)
    return json_response(request, {"tags": [{"name": d.name} for d in found]})


async def create_tags(host: CatalogHost, request: IRequest, namespace: str) -> bytes:
    context = await host.context(request)
    names = decode_tags(_body(request))
    append = (header(request, b"x-openstack-append") or "").strip().lower() in (
        "1", "t", "true", "on", "y", "yes"
    )
    made = await _service(host).add_tags(context, namespace, names, append)
    return json_response(request, {"tags": [{"name": d.name} for d in made]}, 201)


async def create_tag(host: CatalogHost, request: IRequest, namespace: str, name: str) -> bytes:
    context, _ = await _read(host, request)
    spec = DefinitionSpec(Kind.TAG, decode_tag_name(name))
    made = await _service(host).add_definition(context, namespace, spec)
    return json_response(request, tag_document(made), 201)


async def show_tag(host: CatalogHost, request: IRequest, namespace: str, name: str) -> bytes:
    context, _ = await _read(host, request)
    found = await _service(host).get_definition(context, namespace, Kind.TAG, name)
    return json_response(request, tag_document(found))


async def update_tag(host: CatalogHost, request: IRequest, namespace: str, name: str) -> bytes:
    context = await host.context(request)
    spec = decode_tag(_body(request))
    updated = await _service(host).update_definition(context, namespace, name, spec)
    return json_response(request, tag_document(updated))


async def list_resource_types(host: CatalogHost, request: IRequest) -> bytes:
    context, _ = await _read(host, request)
    found = await _service(host).list_resource_types(context)
    return json_response(request, {"resource_types": [resource_type_document(t) for t in found]})


async def list_associations(host: CatalogHost, request: IRequest, namespace: str) -> bytes:
    context, _ = await _read(host, request)
    found = await _service(host).list_associations(context, namespace)
    return json_response(
        request, {"resource_type_associations": [association_document(a) for a in found]}
    )


async def create_association(host: CatalogHost, request: IRequest, namespace: str) -> bytes:
    context = await host.context(request)
    spec = decode_association(_body(request))
    made = await _service(host).associate(context, namespace, spec)
    return json_response(request, association_document(made), 201)


async def delete_association(
    host: CatalogHost, request: IRequest, namespace: str, resource_type: str
) -> bytes:
    context, _ = await _read(host, request)
    await _service(host).dissociate(context, namespace, resource_type)
    return no_content(request)


async def show_schema(host: CatalogHost, request: IRequest, name: str) -> bytes:
    await host.context(request)  # behind authentication, as the images' schemas
    reject_body(request)
    document = schemas.document(name)
    if document is None:
        raise NotFound(f"Schema metadefs/{name} not found.")
    return json_response(request, document)


_NS = NAMESPACES + "/<namespace>"

#: The routes: (rule, methods, handler).  Paths are Glance's (``glance/api/v2/router.py``).
ROUTES: tuple[tuple[str, str, Callable[..., Any]], ...] = (
    (SCHEMAS + "/<name>", "GET", show_schema),
    ("/v2/metadefs/resource_types", "GET", list_resource_types),
    (NAMESPACES, "GET", list_namespaces),
    (NAMESPACES, "POST", create_namespace),
    (_NS, "GET", show_namespace),
    (_NS, "PUT", update_namespace),
    (_NS, "DELETE", delete_namespace),
    (_NS + "/objects", "GET", list_objects),
    (_NS + "/objects", "POST", create_object),
    (_NS + "/objects", "DELETE", _clear(Kind.OBJECT)),
    (_NS + "/objects/<name>", "GET", show_object),
    (_NS + "/objects/<name>", "PUT", update_object),
    (_NS + "/objects/<name>", "DELETE", _delete(Kind.OBJECT)),
    (_NS + "/properties", "GET", list_properties),
    (_NS + "/properties", "POST", create_property),
    (_NS + "/properties", "DELETE", _clear(Kind.PROPERTY)),
    (_NS + "/properties/<name>", "GET", show_property),
    (_NS + "/properties/<name>", "PUT", update_property),
    (_NS + "/properties/<name>", "DELETE", _delete(Kind.PROPERTY)),
    (_NS + "/tags", "GET", list_tags),
    (_NS + "/tags", "POST", create_tags),
    (_NS + "/tags", "DELETE", _clear(Kind.TAG)),
    (_NS + "/tags/<name>", "GET", show_tag),
    (_NS + "/tags/<name>", "POST", create_tag),
    (_NS + "/tags/<name>", "PUT", update_tag),
    (_NS + "/tags/<name>", "DELETE", _delete(Kind.TAG)),
    (_NS + "/resource_types", "GET", list_associations),
    (_NS + "/resource_types", "POST", create_association),
    (_NS + "/resource_types/<resource_type>", "DELETE", delete_association),
)


def mount(app: Klein) -> None:
    """Add the catalog's routes to ``app``, the class-level map of the API that serves them."""
    for rule, method, handler in ROUTES:
        app.route(rule, methods=[method])(handler)


__all__ = ["ROUTES", "CatalogHost", "mount"]
