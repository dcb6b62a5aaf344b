"""
The catalog's rules over an ``IMetadefStore``: who sees and changes what, protection, prefixes.

Each call turns the caller's context into a guard (``imaged.policy``) that the store applies
inside the transaction that reads the namespace, so "may this caller do this to this namespace"
and the change itself are one step.  No HTTP here, no SQL.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import NoReturn, TypeVar

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure
from zope.interface import implementer

from .. import policy
from ..clock import default_clock, utc
from ..context import RequestContext
from ..coroutines import deferred
from ..errors import Forbidden, NamespaceNotFound, NotFound
from ..interfaces import IMetadefService, IMetadefStore
from .model import (
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
    TagQuery,
)

Guard = Callable[[Namespace], None]
T = TypeVar("T")

#: Glance's rule names for each kind's writes (the words of its 403s).
_ADD = {Kind.OBJECT: "add_metadef_object", Kind.PROPERTY: "add_metadef_property",
        Kind.TAG: "add_metadef_tag"}
_MODIFY = {Kind.OBJECT: "modify_metadef_object", Kind.PROPERTY: "modify_metadef_property",
           Kind.TAG: "modify_metadef_tag"}
_REMOVE = {Kind.OBJECT: "delete_metadef_object", Kind.PROPERTY: "remove_metadef_property",
           Kind.TAG: "delete_metadef_tag"}


def _refuse_protected(what: Callable[[Namespace], str]) -> Guard:
    """Refuse (403) to delete from a protected namespace, in Glance's words, ``what``."""

    def check(namespace: Namespace) -> None:
        if namespace.protected:
            raise Forbidden(f"Metadata definition {what(namespace)} is protected and cannot be "
                            "deleted.")

    return check


def _glance_words(done: Deferred[T], kind: Kind | None = None) -> Deferred[T]:
    """Glance's wording of a missing namespace outside showing it and its objects: "Namespace
    X not found" (clients print the message)."""
    if kind is Kind.OBJECT:
        return done

    def reword(failure: Failure) -> NoReturn:
        failure.trap(NamespaceNotFound)
        missing = failure.value
        assert isinstance(missing, NamespaceNotFound)
        raise NotFound(f"Namespace {missing.namespace} not found")

    return done.addErrback(reword)


def _both(*guards: Guard) -> Guard:
    def check(namespace: Namespace) -> None:
        for guard in guards:
            guard(namespace)

    return check


def prefixed(content: Content, resource_type: str) -> Content:
    """
    ``content`` as it applies to ``resource_type``: when the namespace's association with it
    has a prefix, property names (the namespace's and its objects', and objects' required
    lists) carry it, as Glance's ``_prefix_property_name``.
    """
    prefix = next((a.prefix for a in content.associations if a.name == resource_type), None)
    if not prefix:
        return content

    def renamed(definition: Definition) -> Definition:
        if definition.kind is Kind.PROPERTY:
            return attrs.evolve(definition, name=prefix + definition.name)
        if definition.kind is Kind.OBJECT:
            body = dict(definition.body)
            if isinstance(body.get("properties"), dict):
                body["properties"] = {prefix + k: v for k, v in body["properties"].items()}
            if isinstance(body.get("required"), list):
                body["required"] = [prefix + str(name) for name in body["required"]]
            return attrs.evolve(definition, body=body)
        return definition

    return attrs.evolve(content, definitions=tuple(renamed(d) for d in content.definitions))


@implementer(IMetadefService)
class MetadefService:
    """``IMetadefService`` over an ``IMetadefStore`` (Glance 33's metadefs API)."""

    def __init__(
        self,
        store: IMetadefStore,
        rules: policy.Rules = policy.Rules(),
        clock: IReactorTime | None = None,
    ) -> None:
        self.store = store
        self.rules = rules
        self.clock = clock if clock is not None else default_clock()

    def _writer(self, context: RequestContext, action: str) -> Guard:
        return policy.namespace_writer(context, self.rules, action)

    # -- namespaces ---------------------------------------------------------------------

    def list_namespaces(
        self, context: RequestContext, query: NamespaceQuery
    ) -> Deferred[builtins.list[Listed]]:
        return self.store.list_namespaces(policy.catalog_scope(context), query)

    @deferred
    async def get_namespace(
        self, context: RequestContext, name: str, resource_type: str | None = None
    ) -> Content:
        content = await self.store.content(name, policy.namespace_reader(context))
        return prefixed(content, resource_type) if resource_type else content

    def create_namespace(self, context: RequestContext, new: NewNamespace) -> Deferred[Content]:
        spec = new.spec
        owner = spec.owner if spec.owner is not None else context.project_id
        policy.check_create_namespace(context, self.rules, owner)
        visibility = spec.visibility or NamespaceVisibility.PRIVATE
        policy.check_namespace_visibility(context, visibility)
        now = utc(self.clock)
        content = Content(
            namespace=Namespace(
                namespace=spec.namespace,
                display_name=spec.display_name,
                description=spec.description,
                visibility=visibility,
                protected=bool(spec.protected),
                owner=owner,
                created_at=now,
                updated_at=now,
            ),
            associations=tuple(self._association(a, now) for a in new.associations),
            definitions=tuple(self._definition(d, now) for d in new.definitions),
        )
        return self.store.create_namespace(
            content, create_types=policy.may_create_resource_types(context)
        )

    def update_namespace(
        self, context: RequestContext, name: str, spec: NamespaceSpec
    ) -> Deferred[Namespace]:
        """Glance's PUT replaces every attribute: what the body leaves out is cleared, or
        takes its default (private, not protected, owned by the caller's project)."""
        now = utc(self.clock)

        def change(old: Namespace) -> Namespace:
            owner = spec.owner if spec.owner is not None else context.project_id
            policy.check_namespace_owner(context, self.rules, old.owner, owner)
            visibility = spec.visibility or NamespaceVisibility.PRIVATE
            if visibility is not old.visibility:
                policy.check_namespace_visibility(context, visibility)
            return attrs.evolve(
                old,
                namespace=spec.namespace,
                display_name=spec.display_name,
                description=spec.description,
                visibility=visibility,
                protected=bool(spec.protected),
                owner=owner,
                updated_at=now,
            )

        return _glance_words(self.store.update_namespace(
            name, self._writer(context, "modify_metadef_namespace"), change
        ))

    def delete_namespace(self, context: RequestContext, name: str) -> Deferred[None]:
        guard = _both(
            self._writer(context, "delete_metadef_namespace"),
            _refuse_protected(lambda ns: f"namespace {ns.namespace}"),
        )
        return _glance_words(self.store.delete_namespace(name, guard))

    def clear_namespace(self, context: RequestContext, name: str, kind: Kind) -> Deferred[None]:
        """Glance checks the namespace's own delete rule (and ``delete_metadef_tags`` for
        tags), and refuses a protected namespace as a whole."""
        rules = ["delete_metadef_namespace"] + (["delete_metadef_tags"] if kind is Kind.TAG else [])
        guard = _both(
            *(self._writer(context, rule) for rule in rules),
            _refuse_protected(lambda ns: f"namespace {ns.namespace}"),
        )
        return _glance_words(self.store.remove_definitions(name, kind, guard))

    # -- objects, properties, tags --------------------------------------------------------

    def list_definitions(
        self, context: RequestContext, namespace: str, kind: Kind, query: TagQuery | None = None
    ) -> Deferred[builtins.list[Definition]]:
        return _glance_words(
            self.store.definitions(namespace, kind, policy.namespace_reader(context), query), kind
        )

    def get_definition(
        self,
        context: RequestContext,
        namespace: str,
        kind: Kind,
        name: str,
        resource_type: str | None = None,
    ) -> Deferred[Definition]:
        found = Deferred.fromCoroutine(
            self._get_definition(context, namespace, kind, name, resource_type)
        )
        return _glance_words(found, kind)

    async def _get_definition(
        self,
        context: RequestContext,
        namespace: str,
        kind: Kind,
        name: str,
        resource_type: str | None,
    ) -> Definition:
        reader = policy.namespace_reader(context)
        if resource_type and kind is Kind.PROPERTY:
            # A property asked for by the name it has on a resource type (``hw_`` + name).
            associations = await self.store.associations(namespace, reader)
            found = next((a for a in associations if a.name == resource_type), None)
            if found is None and resource_type not in {
                t.name for t in await self.store.resource_types()
            }:
                raise NotFound(f"The metadata definition resource-type with "
                               f"name={resource_type}, was not found.")
            if found is None:
                raise NotFound(
                    "The metadata definition resource-type association of "
                    f"resource-type={resource_type} to namespace={namespace}, was not found."
                )
            prefix = found.prefix
            if not prefix or not name.startswith(prefix):
                raise NotFound(
                    f"Property {name} does not start with the expected resource type "
                    f"association prefix of '{prefix}'."
                )
            return await self.store.definition(namespace, kind, name[len(prefix):], reader)
        return await self.store.definition(namespace, kind, name, reader)

    def add_definition(
        self, context: RequestContext, namespace: str, spec: DefinitionSpec
    ) -> Deferred[Definition]:
        guard = self._writer(context, _ADD[spec.kind])
        added = self.store.add_definitions(
            namespace, [self._definition(spec, utc(self.clock))], guard
        )
        return _glance_words(added, spec.kind).addCallback(lambda made: made[0])

    def add_tags(
        self, context: RequestContext, namespace: str, names: Sequence[str], append: bool
    ) -> Deferred[builtins.list[Definition]]:
        now = utc(self.clock)
        tags = [self._definition(DefinitionSpec(Kind.TAG, name), now) for name in names]
        guard = self._writer(context, "add_metadef_tags")
        # An empty list replaces nothing (Glance leaves the tags as they are).
        replace = None if append or not tags else Kind.TAG
        return _glance_words(
            self.store.add_definitions(namespace, tags, guard, replace_kind=replace)
        )

    def update_definition(
        self, context: RequestContext, namespace: str, name: str, spec: DefinitionSpec
    ) -> Deferred[Definition]:
        now = utc(self.clock)

        def change(old: Definition) -> Definition:
            return attrs.evolve(old, name=spec.name, body=dict(spec.body), updated_at=now)

        return _glance_words(self.store.replace_definition(
            namespace, spec.kind, name, self._writer(context, _MODIFY[spec.kind]), change
        ), spec.kind)

    def delete_definition(
        self, context: RequestContext, namespace: str, kind: Kind, name: str
    ) -> Deferred[None]:
        # Glance's order: policy, then the definition (404), then the namespace's protection.
        return _glance_words(self.store.remove_definitions(
            namespace, kind, self._writer(context, _REMOVE[kind]), name,
            protect=_refuse_protected(lambda _: f"{kind.singular} {name}"),
        ), kind)

    # -- resource types ---------------------------------------------------------------------

    def list_resource_types(self, context: RequestContext) -> Deferred[builtins.list[ResourceType]]:
        policy.check_catalog_reader(context)
        return self.store.resource_types()

    def list_associations(
        self, context: RequestContext, namespace: str
    ) -> Deferred[builtins.list[Association]]:
        return _glance_words(self.store.associations(namespace, policy.namespace_reader(context)))

    def associate(
        self, context: RequestContext, namespace: str, spec: AssociationSpec
    ) -> Deferred[Association]:
        guard = self._writer(context, "add_metadef_resource_type_association")
        return _glance_words(self.store.associate(
            namespace, self._association(spec, utc(self.clock)), guard,
            create_types=policy.may_create_resource_types(context),
        ))

    def dissociate(
        self, context: RequestContext, namespace: str, resource_type: str
    ) -> Deferred[None]:
        return _glance_words(self.store.dissociate(
            namespace, resource_type,
            self._writer(context, "remove_metadef_resource_type_association"),
            protect=_refuse_protected(lambda _: f"resource-type-association {resource_type}"),
        ))

    # -- values -----------------------------------------------------------------------------

    @staticmethod
    def _definition(spec: DefinitionSpec, now: datetime) -> Definition:
        return Definition(kind=spec.kind, name=spec.name, body=dict(spec.body),
                          created_at=now, updated_at=now)

    @staticmethod
    def _association(spec: AssociationSpec, now: datetime) -> Association:
        return Association(name=spec.name, prefix=spec.prefix,
                           properties_target=spec.properties_target,
                           created_at=now, updated_at=now)


__all__ = ["MetadefService", "prefixed"]
