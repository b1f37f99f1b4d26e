"""OpenAPI 3.1 description of the node's HTTP APIs, served at ``GET /api/openapi.json``.

Three families, as clients know them: the Handle.Net 9 REST API (``/api/handles``,
``/api/prefixes``, ``/api/sessions``) plus converged resolution (``/api/resolve``); the SNMS
API that Chinese identifier applications call (``/identity/…``, ``/identityv2/…``); and the
GS1 conformant resolver (``/{AI}/{value}…``, ``/.well-known/gs1resolver``); beside them the
reverse lookup (``/hrls/…``, as Handle.Net's HRLS) and what a federation node publishes about
itself (``/api/federation/info``, ``/api/federation/templates``), the federation's prefix
lifecycle (applications and review, filings, verification, the audit trail, a recursive
node's walks) and its statistics (``/api/federation/stats``). Schemas are JSON
Schema 2020-12 (OpenAPI 3.1's dialect) and closed (``additionalProperties: false``) where the
answer's shape is fixed, so tests/server/test_openapi.py can validate live answers against
them and fail when code and description drift apart.

Written by hand rather than derived: the handlers are plain aiohttp functions translating to
the core, and these shapes are Handle.Net's, SNMS's and GS1's, not ours to generate.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import orjson

from idr import __version__
from idr.model.errors import ResponseCode
from idr.schemes.gs1 import PRIMARY_KEYS

Schema = dict[str, Any]

JSON = "application/json"
LINKSET = "application/linkset+json"


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: Schema, description: str, media: str = JSON) -> Schema:
    return {"description": description, "content": {media: {"schema": schema}}}


def _closed(properties: Schema, required: list[str]) -> Schema:
    return {"type": "object", "properties": properties, "required": required, "additionalProperties": False}


def _param(name: str, where: str, description: str, schema: Schema, *, required: bool = False) -> Schema:
    return {"name": name, "in": where, "description": description, "required": required, "schema": schema}


_BOOL_PARAM = {"type": "string", "description": "absent → default; bare, `true` or `yes` → true"}
_HANDLE_PATH = _param(
    "handle",
    "path",
    "The handle, `prefix/suffix`; its `/` is part of the path. Percent-decoded once "
    "(`%2F` inside a suffix stays a slash of the suffix).",
    {"type": "string"},
    required=True,
)
_PRETTY = _param("pretty", "query", "Indent the JSON.", _BOOL_PARAM)
_CALLBACK = _param("callback", "query", "JSONP: wrap the answer in this function call.", {"type": "string"})

_REST_ERRORS = {
    str(status): {"$ref": "#/components/responses/HandleError"}
    for status in (400, 401, 403, 404, 409, 500, 503)
}

_CODES = sorted(int(c) for c in ResponseCode)


def _schemas() -> Schema:
    value_data = {
        "type": "object",
        "properties": {
            "format": {"enum": ["string", "base64", "hex", "admin", "vlist", "site", "key"]},
            "value": {},
        },
        "required": ["format", "value"],
        "additionalProperties": False,
    }
    reference = _closed({"handle": {"type": "string"}, "index": {"type": "integer"}}, ["handle", "index"])
    return {
        "ResponseCode": {
            "type": "integer",
            "enum": _CODES,
            "description": "Handle protocol response code (RFC 3652 §2.2.2.4): 1 success, 100 not found, …",
        },
        "ValueReference": reference,
        "HandleValue": {
            "type": "object",
            "properties": {
                "index": {"type": "integer"},
                "type": {"type": "string"},
                "data": value_data,
                "permissions": {"type": "string", "pattern": "^[01]{4}$"},
                "ttl": {
                    "oneOf": [
                        {"type": "integer", "description": "relative, seconds"},
                        {"type": "string", "format": "date-time", "description": "absolute expiry"},
                    ]
                },
                "timestamp": {"type": "string", "format": "date-time"},
                "references": {"type": "array", "items": reference},
            },
            "required": ["index", "type", "data", "ttl"],
            "additionalProperties": False,
        },
        "ValueInput": {
            "description": "A value to write: `data` may be a bare string (pyhandle) or `{format, value}`.",
            "type": "object",
            "properties": {
                "index": {"type": ["integer", "string"]},
                "type": {"type": "string"},
                "data": {"oneOf": [{"type": "string"}, value_data]},
                "permissions": {"type": "string"},
                "ttl": {"type": ["integer", "string"]},
                "references": {"type": "array", "items": reference},
            },
            "required": ["index", "type", "data"],
        },
        "HandleRecordInput": {
            "oneOf": [
                {"type": "array", "items": _ref("ValueInput")},
                {
                    "type": "object",
                    "properties": {
                        "handle": {"type": "string"},
                        "values": {"type": "array", "items": _ref("ValueInput")},
                    },
                    "required": ["values"],
                },
            ]
        },
        "Resolution": _closed(
            {
                "responseCode": {"const": 1},
                "handle": {"type": "string"},
                "values": {"type": "array", "items": _ref("HandleValue")},
            },
            ["responseCode", "handle", "values"],
        ),
        "HandleError": _closed(
            {
                "responseCode": _ref("ResponseCode"),
                "handle": {"type": "string"},
                "message": {"type": "string"},
                "values": {"type": "array", "maxItems": 0, "description": "VALUES_NOT_FOUND (200) only"},
            },
            ["responseCode"],
        ),
        "WriteResult": _closed(
            {"responseCode": {"const": 1}, "handle": {"type": "string"}}, ["responseCode", "handle"]
        ),
        "HandleList": _closed(
            {
                "responseCode": {"const": 1},
                "prefix": {"type": "string"},
                "totalCount": {"type": "string", "pattern": "^[0-9]+$"},
                "page": {"type": "integer", "minimum": 0},
                "pageSize": {"type": "integer", "minimum": 0},
                "handles": {"type": "array", "items": {"type": "string"}},
            },
            ["responseCode", "totalCount", "handles"],
        ),
        "PrefixList": _closed(
            {
                "responseCode": {"const": 1},
                "totalCount": {"type": "string", "pattern": "^[0-9]+$"},
                "page": {"type": "integer", "minimum": 0},
                "pageSize": {"type": "integer", "minimum": 0},
                "prefixes": {"type": "array", "items": {"type": "string"}},
            },
            ["responseCode", "totalCount", "prefixes"],
        ),
        "Session": {
            "oneOf": [
                _closed(
                    {
                        "sessionId": {"type": "string"},
                        "nonce": {"type": "string", "contentEncoding": "base64"},
                        "authenticated": {"const": True},
                        "id": {"type": "string"},
                        "error": {"type": "string"},
                    },
                    ["sessionId", "nonce"],
                ),
                _closed({"authenticated": {"const": False}}, ["authenticated"]),
            ]
        },
        "ConvergedResolution": {
            "type": "object",
            "properties": {
                "responseCode": _ref("ResponseCode"),
                "handle": {"type": "string"},
                "message": {"type": "string"},
                "values": {"type": "array", "items": _ref("HandleValue")},
                "scheme": {"enum": ["handle", "gs1", "oid", "ecode"]},
                "details": {"type": "object", "description": "What the scheme parser found."},
                "ai": {"type": "string", "description": "GS1 refusal: the Application Identifier at fault"},
                "rule": {"type": "string", "description": "GS1 refusal: the rule it breaks (e.g. length)"},
            },
            "required": ["responseCode"],
            "additionalProperties": False,
            "description": "`scheme` and `details` say what was recognised (absent when `id` is missing).",
        },
        # ---- SNMS
        "SnmsStatus": {
            "enum": [1, -1, -2, -3, -4],
            "description": "1 success, -1 not logged in, -2 business failure, -3 no permission, -4 internal",
        },
        "SnmsEnvelope": _closed(
            {"status": _ref("SnmsStatus"), "message": {"type": "string"}, "data": {}},
            ["status", "message", "data"],
        ),
        "SnmsLogin": _closed(
            {"username": {"type": "string"}, "password": {"type": "string"}}, ["username", "password"]
        ),
        "SnmsToken": _closed({"token": {"type": "string", "minLength": 20}}, ["token"]),
        "SnmsValue": _closed(
            {
                "index": {"type": "integer", "minimum": 1},
                "type": {"type": "string"},
                "auth": {"enum": ["0", "1"]},
                "data": _closed(
                    {"format": {"enum": ["string", "hex"]}, "value": {"type": "string"}}, ["format", "value"]
                ),
            },
            ["index", "type", "data"],
        ),
        "SnmsItem": {
            "type": "object",
            "properties": {
                "handle": {"type": "string", "maxLength": 255},
                "templateVersion": {"type": "string", "maxLength": 128},
                "value": {"type": "array", "items": _ref("SnmsValue"), "maxItems": 2000},
            },
            "required": ["handle", "templateVersion", "value"],
        },
        "SnmsRecord": _closed(
            {
                "prefix": {"type": "string"},
                "handle": {"type": "string"},
                "templateVersion": {"type": "string"},
                "value": {"type": "array", "items": _ref("SnmsValue")},
            },
            ["prefix", "handle", "templateVersion", "value"],
        ),
        "SnmsBatchResult": _closed(
            {"handle": {"type": "string"}, "code": _ref("SnmsStatus"), "msg": {"type": "string"}},
            ["handle", "code", "msg"],
        ),
        # ---- GS1
        "LinkTarget": _closed(
            {
                "href": {"type": "string"},
                "title": {"type": "string"},
                "hreflang": {"type": "array", "items": {"type": "string"}},
                "type": {"type": "string"},
                "context": {"type": "array", "items": {"type": "string"}},
            },
            ["href", "title"],
        ),
        "Linkset": _closed(
            {
                "linkset": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "properties": {"anchor": {"type": "string"}},
                        "required": ["anchor"],
                        "additionalProperties": {"type": "array", "items": _ref("LinkTarget")},
                    },
                }
            },
            ["linkset"],
        ),
        "Gs1Error": _closed(
            {
                "error": {"type": "string"},
                "anchor": {"type": "string"},
                "linkTypes": {"type": "array", "items": {"type": "string"}},
                "ai": {"type": "string", "description": "the Application Identifier a refusal is about"},
                "rule": {"type": "string", "description": "the GS1 rule it breaks (e.g. length)"},
            },
            ["error"],
        ),
        "ResolverDescription": {
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "resolverRoot": {"type": "string"},
                "supportedLinkType": {"type": "array"},
                "supportedPrimaryKeys": {"type": "array", "items": {"type": "string"}},
                "linkTypeDefaultCanBeAll": {"type": "boolean"},
                "linkTypeDefaultCanBeLinkset": {"type": "boolean"},
                "supportsLanguageVariants": {"type": "boolean"},
                "supportsSemanticInterpretation": {"type": "boolean"},
                "validatesAIcombinations": {"type": "boolean"},
                "jsonLdContextLocation": {"type": "string"},
                "activeLinkTypes": {"type": "object"},
            },
            "required": ["name", "resolverRoot", "supportedPrimaryKeys"],
        },
    }


def _federation_schemas() -> Schema:
    field = {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "kind": {"type": "string"},
            "required": {"type": "boolean"},
            "description": {"type": "string"},
            "choices": {"type": "array", "items": {"type": "string"}},
            "minimum": {"type": "number"},
            "maximum": {"type": "number"},
            "min_length": {"type": "integer"},
            "max_length": {"type": "integer"},
        },
        "required": ["name", "kind", "required"],
        "additionalProperties": False,
    }
    claim = _closed(
        {"index": {"type": "integer"}, "type": {"type": "string"}, "data": {"type": "string"}},
        ["index", "type", "data"],
    )
    template = {
        "type": "object",
        "description": "An identifier data template (core.templates): what a record claiming it holds.",
        "properties": {
            "id": {"type": "string"},
            "version": {"type": "integer"},
            "ref": {"type": "string", "description": "`id@version`, what a record's claim names"},
            "name": {"type": "string"},
            "industry": {"type": "string"},
            "claim": claim,
            "fields": {"type": "array", "items": field},
            "builtin": {"type": "boolean"},
            "snms_version": {"type": "string"},
        },
        "required": ["id", "version", "ref", "name", "industry", "claim", "fields", "builtin"],
        "additionalProperties": False,
    }
    one = _closed({"responseCode": {"const": 1}, "template": template}, ["responseCode", "template"])
    many = _closed(
        {"responseCode": {"const": 1}, "templates": {"type": "array", "items": template}},
        ["responseCode", "templates"],
    )
    info = _closed(
        {
            "responseCode": {"const": 1},
            "role": {"type": "string"},
            "prefixes": {"type": "array", "items": {"type": "string"}},
            "site": {
                "type": ["object", "null"],
                "description": "The node's HS_SITE, as the REST API gives it.",
            },
        },
        ["responseCode", "role", "prefixes", "site"],
    )
    public_value = _closed({"type": {"type": "string"}, "value": {"type": "string"}}, ["type", "value"])
    return {
        **_lifecycle_schemas(),
        **_stats_schemas(),
        "Template": template,
        "TemplateAnswer": one,
        "TemplateList": many,
        "FederationInfo": info,
        "HrlsHandles": {"type": "array", "items": {"type": "string"}},
        "HrlsRecords": {
            "type": "object",
            "description": "`retrieverecords=true`: each found handle's public values (text, or base64).",
            "additionalProperties": {"type": "array", "items": public_value},
        },
    }


def _ok_with(properties: Schema, required: list[str]) -> Schema:
    """A federation answer: ``responseCode`` 1 beside ``properties``, nothing else."""
    return _closed({"responseCode": {"const": 1}, **properties}, ["responseCode", *required])


_STR = {"type": "string"}
_INT = {"type": "integer"}
_NUM = {"type": "number"}
_BOOL = {"type": "boolean"}


def _lifecycle_schemas() -> Schema:
    application = _closed(
        {
            "id": _STR,
            "parent": _STR,
            "enterprise": _STR,
            "uscc": {"type": "string", "description": "unified social credit code (统一社会信用代码)"},
            "contact": _STR,
            "requested": {"type": "string", "description": "the prefix asked for, or empty"},
            "status": {"enum": ["pending", "approved", "rejected"]},
            "prefix": {"type": "string", "description": "the prefix allocated (approved)"},
            "reason": {"type": "string", "description": "why it was rejected"},
            "applicant": _STR,
            "reviewer": _STR,
            "created": _INT,
            "decided": _INT,
            "key_kind": {"enum": ["seckey", "pubkey"]},
            "filed": {"type": "boolean", "description": "filed (备案) with the top node"},
            "filing_error": _STR,
            "extra": {"type": "object"},
        },
        ["id", "parent", "enterprise", "uscc", "contact", "status", "prefix", "created", "filed"],
    )
    filing = _closed(
        {
            "prefix": _STR,
            "parent": _STR,
            "enterprise": _STR,
            "uscc": _STR,
            "contact": _STR,
            "filed_by": _STR,
            "filed_at": _INT,
        },
        ["prefix", "parent", "enterprise", "uscc", "filed_by", "filed_at"],
    )
    hop = _closed(
        {
            "node": _STR,
            "server": _STR,
            "handle": _STR,
            "code": _INT,
            "status": {"type": "string", "description": "the response code's name"},
            "ms": _NUM,
            "cached": _BOOL,
            "note": {"type": "string", "description": "`referral`, or empty"},
        },
        ["node", "server", "handle", "code", "status", "ms", "cached", "note"],
    )
    outcome = _closed({"code": _INT, "status": _STR, "message": _STR}, ["code", "status", "message"])
    verification = _closed(
        {
            "query": _STR,
            "prefix": _STR,
            "filed": _BOOL,
            "filing": {
                "type": "object",
                "description": "Public part of the filing (no credit code, no contact), or that the "
                "top holds the prefix handle itself (`kind`).",
                "properties": {
                    "prefix": _STR,
                    "parent": _STR,
                    "enterprise": _STR,
                    "filed_by": _STR,
                    "filed_at": _INT,
                    "kind": _STR,
                },
                "required": ["prefix"],
                "additionalProperties": False,
            },
            "served_by": {
                "type": "array",
                "items": _closed({"node": _STR, "server": _STR, "primary": _BOOL}, ["node", "server"]),
            },
            "prefix_handle": outcome,
            "identifier": _closed(
                {"handle": _STR, "exists": _BOOL, "code": _INT, "status": _STR},
                ["handle", "exists", "code", "status"],
            ),
            "answering": _BOOL,
            "ms": _NUM,
            "hops": {"type": "array", "items": _ref("Hop")},
        },
        ["query", "prefix", "filed", "served_by", "prefix_handle", "answering", "ms", "hops"],
    )
    audit_entry = _closed(
        {"seq": _INT, "time": _NUM, "op": _STR, "actor": _STR, "keys": {"type": "array", "items": _STR}},
        ["seq", "time", "op", "actor", "keys"],
    )
    chain_node = _closed(
        {
            "handle": _STR,
            "via": {"type": "string", "description": "the value type that pointed here (empty at the root)"},
            "code": _INT,
            "status": _STR,
            "cached": _BOOL,
            "message": _STR,
            "hops": {"type": "array", "items": _ref("Hop")},
            "values": {"type": "object", "additionalProperties": {"type": "string"}},
            "children": {"type": "array", "items": _ref("ChainNode")},
            "cycle": {"const": True, "description": "already shown higher in the tree"},
            "truncated": {"enum": ["node limit", "depth limit"]},
        },
        ["handle", "via"],
    )
    return {
        "Application": application,
        "ApplicationInput": {
            "type": "object",
            "description": "Exactly one of `secret` and `publicKey` (a JWK): the new prefix's admin key.",
            "properties": {
                "enterprise": _STR,
                "uscc": _STR,
                "contact": _STR,
                "secret": _STR,
                "publicKey": {"type": "object"},
                "prefix": {"type": "string", "description": "the prefix asked for (`<parent>.N`)"},
            },
            "required": ["enterprise", "uscc", "contact"],
        },
        "ApplicationAnswer": _ok_with({"application": _ref("Application")}, ["application"]),
        "ApplicationList": _ok_with(
            {"applications": {"type": "array", "items": _ref("Application")}}, ["applications"]
        ),
        "Filing": filing,
        "FilingInput": {
            "type": "object",
            "properties": {"prefix": _STR, "parent": _STR, "enterprise": _STR, "uscc": _STR, "contact": _STR},
            "required": ["prefix", "parent", "enterprise", "uscc"],
        },
        "FilingAnswer": _ok_with({"filing": _ref("Filing")}, ["filing"]),
        "FilingList": _ok_with({"filings": {"type": "array", "items": _ref("Filing")}}, ["filings"]),
        "Hop": hop,
        "Verification": _ok_with({"verification": verification}, ["verification"]),
        "AuditTrail": _ok_with(
            {
                "entries": {"type": "array", "items": audit_entry},
                "retained_from": {"type": "integer", "description": "the oldest seq the log still holds"},
                "last_seq": _INT,
                "beyond_retention": {"type": "string", "description": "entries asked for, compacted away"},
            },
            ["entries", "retained_from", "last_seq"],
        ),
        "WalkedResolution": _ok_with(
            {
                "handle": _STR,
                "code": _INT,
                "status": _STR,
                "cached": _BOOL,
                "hops": {"type": "array", "items": _ref("Hop")},
                "values": {"type": "array", "items": _ref("HandleValue")},
                "message": _STR,
                "trust": {"type": "object", "description": "the record's signature check ([trust] roots)"},
            },
            ["handle", "code", "status", "cached", "hops"],
        ),
        "ChainNode": chain_node,
        "SupplyChain": _ok_with({"tree": _ref("ChainNode")}, ["tree"]),
    }


def _stats_schemas() -> Schema:
    figures = {
        "type": "object",
        "description": "registered, deleted, prefixes_allocated, prefixes_filed, resolutions",
        "additionalProperties": _INT,
    }
    grouped = {"type": "object", "additionalProperties": figures}
    node = {
        "type": "object",
        "description": "One node of the subtree: its last report, status and availability.",
        "properties": {
            "node": _STR,
            "name": _STR,
            "role": _STR,
            "status": {"enum": ["self", "ok", "late", "down", "silent"]},
            "prefixes": {"type": "array", "items": _STR},
        },
        "required": ["node", "name", "role", "status", "prefixes"],
    }
    period = {"type": "object", "description": "one day's or month's figures and breakdowns"}
    entry = {
        "type": "object",
        "description": "A node's report entry: cumulative figures since its store began (`instance`).",
        "properties": {"node": _STR, "role": _STR, "instance": _STR, "seq": _INT, "time": _NUM},
        "required": ["node", "role", "instance", "seq", "time"],
    }
    ack = _closed(
        {
            "node": _STR,
            "applied": _INT,
            "duplicates": _INT,
            "held": {
                "oneOf": [_closed({"instance": _STR, "seq": _INT}, ["instance", "seq"]), {"type": "null"}]
            },
        },
        ["node", "applied", "duplicates", "held"],
    )
    totals = {
        k: _INT
        for k in (
            "secondary_nodes",
            "enterprise_nodes",
            "recursive_nodes",
            "registered",
            "deleted",
            "resolutions",
            "prefixes_allocated",
            "prefixes_filed",
        )
    }
    return {
        "FederationStats": _ok_with(
            {
                "node": _STR,
                "time": _NUM,
                **totals,
                "resolutions_by_frontend": {"type": "object", "additionalProperties": _INT},
                "resolutions_by_code": {"type": "object", "additionalProperties": _INT},
                "by_secondary": grouped,
                "by_industry": grouped,
                "by_region": grouped,
                "nodes": {"type": "array", "items": node},
                "days": {"type": "array", "items": period},
                "months": {"type": "array", "items": period},
                "role": _STR,
                "interval": _NUM,
                "reporting": _closed(
                    {
                        "parent": {"type": ["string", "null"]},
                        "last_sent": {"type": ["number", "null"]},
                        "last_error": {"type": ["string", "null"]},
                        "ack": {"oneOf": [ack, {"type": "null"}]},
                    },
                    ["parent", "last_sent", "last_error", "ack"],
                ),
            },
            [*totals, "node", "time", "nodes", "days", "months", "role", "interval", "reporting"],
        ),
        "StatsReport": {
            "type": "object",
            "description": "A child's report: its own entry first, then those it forwards.",
            "properties": {
                "report": {"const": 1},
                "node": _STR,
                "entries": {"type": "array", "items": entry, "minItems": 1},
            },
            "required": ["report", "node", "entries"],
        },
        "StatsAck": _ok_with(ack["properties"], ack["required"]),
        "StatsSent": _ok_with(
            {
                "entry": entry,
                "parent": {"type": ["string", "null"], "description": "where it was sent, or null"},
                "ack": ack,
                "sent": _BOOL,
                "error": _STR,
            },
            ["entry", "parent"],
        ),
    }


def _federation_paths() -> Schema:
    errors = {str(s): {"$ref": "#/components/responses/HandleError"} for s in (400, 404, 500, 501, 503)}
    ref = _param(
        "ref", "path", "`id@version`, or `id` for its newest version.", {"type": "string"}, required=True
    )
    return {
        "/api/federation/info": {
            "get": {
                "tags": ["Federation"],
                "summary": "The node's role, the prefixes homed on it and its site.",
                "responses": {"200": _json(_ref("FederationInfo"), "About this node."), **errors},
            }
        },
        "/api/federation/templates": {
            "get": {
                "tags": ["Federation"],
                "summary": "The identifier data templates this node enforces (built-in and its own).",
                "responses": {
                    "200": _json(_ref("TemplateList"), "Every template, each version."),
                    **errors,
                    "501": _json(_ref("HandleError"), "A recursive node holds no templates."),
                },
            }
        },
        "/api/federation/templates/{ref}": {
            "get": {
                "tags": ["Federation"],
                "summary": "One template.",
                "parameters": [ref],
                "responses": {
                    "200": _json(_ref("TemplateAnswer"), "The template."),
                    **errors,
                    "404": _json(_ref("HandleError"), "No such template."),
                },
            }
        },
        **_lifecycle_paths(),
        **_stats_paths(),
    }


_LIFECYCLE_ERRORS = {
    str(s): {"$ref": "#/components/responses/HandleError"} for s in (400, 401, 403, 404, 409, 500, 501, 503)
}


def _fed_op(
    summary: str,
    answer: tuple[int, str, str],
    *,
    params: list[Schema] | None = None,
    auth: bool = False,
    body: Schema | None = None,
    body_required: bool = True,
    more: Schema | None = None,
) -> Schema:
    """One federation operation: ``answer`` = (status, schema name, what it is), or a
    HandleError; ``auth``: Basic over HTTPS; ``more``: other described answers."""
    status, schema, what = answer
    op: Schema = {"tags": ["Federation"], "summary": summary}
    if params:
        op["parameters"] = params
    if auth:
        op["security"] = [{"basic": []}]
    if body is not None:
        op["requestBody"] = {"required": body_required, "content": {JSON: {"schema": body}}}
    op["responses"] = {str(status): _json(_ref(schema), what), **_LIFECYCLE_ERRORS, **(more or {})}
    return op


def _lifecycle_paths() -> Schema:
    """A secondary's prefix applications and their review (实名审核), the top's filings (备案)
    and verification (核验), the audit trail, and a recursive node's walks. Elsewhere: 501."""
    handle = _param("handle", "query", "The identifier.", {"type": "string"}, required=True)
    too_many = {
        "description": "Too many (from this network, or pending under the parent).",
        "headers": {"Retry-After": {"schema": {"type": "integer"}}},
        "content": {JSON: {"schema": _ref("HandleError")}},
    }
    decision = {
        "type": "object",
        "properties": {
            "prefix": {"type": "string", "description": "approve: this prefix"},
            "reason": {"type": "string", "description": "reject: why"},
        },
    }
    return {
        "/api/federation/applications": {
            "get": _fed_op(
                "The review queue (a reviewer of the parent prefix: its admins).",
                (200, "ApplicationList", "The applications."),
                params=[
                    _param("status", "query", "Only these.", {"enum": ["pending", "approved", "rejected"]})
                ],
                auth=True,
            ),
            "post": _fed_op(
                "Apply for a prefix under this secondary's (anyone, over HTTPS; rate-limited).",
                (201, "ApplicationAnswer", "Recorded, pending review."),
                body=_ref("ApplicationInput"),
                more={"429": too_many},
            ),
        },
        "/api/federation/applications/{id}/{action}": {
            "parameters": [
                _param("id", "path", "The application.", {"type": "string"}, required=True),
                _param(
                    "action",
                    "path",
                    "`approve` (allocates, and files with the top when the node has one), `reject` "
                    "(needs a `reason`), or `file` (file an approved one again).",
                    {"enum": ["approve", "reject", "file"]},
                    required=True,
                ),
            ],
            "post": _fed_op(
                "Decide an application (a reviewer), or file it with the top.",
                (200, "ApplicationAnswer", "The application now."),
                auth=True,
                body=decision,
                body_required=False,
            ),
        },
        "/api/federation/filings": {
            "get": _fed_op(
                "The top's filing register: its admins see all, a secondary's admins their own.",
                (200, "FilingList", "The filings."),
                auth=True,
            ),
            "post": _fed_op(
                "File an allocated prefix with the top (an admin of its parent prefix).",
                (201, "FilingAnswer", "Filed."),
                auth=True,
                body=_ref("FilingInput"),
            ),
        },
        "/api/federation/verify": {
            "get": _fed_op(
                "Verify (核验) a prefix or an identifier at the top: filed? served? answering?",
                (200, "Verification", "What the federation says."),
                params=[
                    _param("id", "query", "A prefix or an identifier.", {"type": "string"}, required=True)
                ],
            )
        },
        "/api/federation/audit": {
            "get": _fed_op(
                "The node's transaction log, newest last (an admin of the node).",
                (200, "AuditTrail", "The entries."),
                params=[
                    _param("since", "query", "Entries after this seq.", {"type": "integer"}),
                    _param(
                        "limit",
                        "query",
                        "At most this many (default 200, at most 10000).",
                        {"type": "integer"},
                    ),
                    _param("match", "query", "Only entries naming a key with this text.", {"type": "string"}),
                ],
                auth=True,
            )
        },
        "/api/federation/resolve": {
            "get": {
                **_fed_op(
                    "Resolve through the federation with every hop (a recursive node).",
                    (200, "WalkedResolution", "The walk."),
                    params=[handle],
                ),
                "description": "The outcome is in `code`: a handle not found is HTTP 200, code 100.",
            }
        },
        "/api/federation/trace": {
            "get": _fed_op(
                "The supply chain below an identifier, its references walked (recursive node).",
                (200, "SupplyChain", "The tree."),
                params=[
                    handle,
                    _param("depth", "query", "How deep (default 6, at most 12).", {"type": "integer"}),
                ],
            )
        },
    }


def _stats_paths() -> Schema:
    """Federation statistics (数据上报, 统计汇聚): ``idr.server.stats``. A standalone node: 501."""
    return {
        "/api/federation/stats": {
            "get": _fed_op(
                "This subtree's figures: per node, secondary, industry, region and period.",
                (200, "FederationStats", "The figures."),
            )
        },
        "/api/federation/stats/report": {
            "post": _fed_op(
                "A child node's report (as the child's identity, over HTTPS).",
                (200, "StatsAck", "Applied."),
                auth=True,
                body=_ref("StatsReport"),
            )
        },
        "/api/federation/stats/send": {
            "post": _fed_op(
                "Cut a report now and send it to the parent (an admin of this node).",
                (200, "StatsSent", "The entry, and the parent's answer."),
                auth=True,
            )
        },
    }


def _hrls_paths() -> Schema:
    errors = {str(s): {"$ref": "#/components/responses/HandleError"} for s in (400, 401, 403, 500, 501, 503)}
    auth: list[Schema] = [{}, {"basic": []}, {"handle": []}]
    return {
        "/hrls/handles": {
            "get": {
                "tags": ["HRLS"],
                "summary": "Reverse lookup: the handles whose values match every `TYPE=pattern`.",
                "description": "Every query parameter other than the reserved ones is a search field "
                "(a value type) and its pattern, `*` matching anything; all must hold. Who may search "
                "is the node's `[search] access` (default: any authenticated identity).",
                "parameters": [
                    _param(
                        "limit",
                        "query",
                        "At most this many (default 1000, at most 10000).",
                        {"type": "integer"},
                    ),
                    _param("page", "query", "Results to skip.", {"type": "integer"}),
                    _param(
                        "retrieverecords",
                        "query",
                        "Each handle's public values instead of a list.",
                        _BOOL_PARAM,
                    ),
                    _param("enforcesql", "query", "Accepted, without meaning here.", {"type": "string"}),
                    _PRETTY,
                    _CALLBACK,
                ],
                "security": auth,
                "responses": {
                    "200": {
                        "description": "The handles (or, with `retrieverecords`, their values).",
                        "content": {
                            JSON: {"schema": {"oneOf": [_ref("HrlsHandles"), _ref("HrlsRecords")]}},
                            "application/javascript": {"schema": {"type": "string"}},
                        },
                    },
                    **errors,
                    "501": _json(_ref("HandleError"), "Reverse lookup is off for this store."),
                },
            }
        },
        "/hrls/ping": {
            "get": {
                "tags": ["HRLS"],
                "summary": "Liveness of the reverse-lookup service.",
                "responses": {
                    "200": {"description": "`OK`", "content": {"text/plain": {"schema": {"const": "OK\n"}}}}
                },
            }
        },
    }


def _rest_paths() -> Schema:
    resolution_params = [
        _HANDLE_PATH,
        _param("index", "query", "Only values at these indexes (repeatable).", {"type": "integer"}),
        _param("type", "query", "Only values of these types (repeatable).", {"type": "string"}),
        _param("publicOnly", "query", "Public values only (default: true when anonymous).", _BOOL_PARAM),
        _param("auth", "query", "Authoritative: bypass caches.", _BOOL_PARAM),
        _PRETTY,
        _CALLBACK,
    ]
    auth: list[Schema] = [{"basic": []}, {"handle": []}]
    return {
        "/api/handles": {
            "get": {
                "tags": ["REST"],
                "summary": "List the handles under a prefix (admin of the prefix).",
                "parameters": [
                    _param("prefix", "query", "The prefix, e.g. 88.100.", {"type": "string"}, required=True),
                    _param("page", "query", "Page number (with pageSize).", {"type": "integer"}),
                    _param("pageSize", "query", "Handles per page.", {"type": "integer"}),
                    _PRETTY,
                ],
                "security": auth,
                "responses": {"200": _json(_ref("HandleList"), "The handles."), **_REST_ERRORS},
            }
        },
        "/api/handles/{handle}": {
            "get": {
                "tags": ["REST"],
                "summary": "Resolve a handle.",
                "parameters": resolution_params,
                "security": [{}, *auth],
                "responses": {
                    "200": {
                        "description": "The record (or, with `callback`, JSONP).",
                        "content": {
                            JSON: {"schema": {"oneOf": [_ref("Resolution"), _ref("HandleError")]}},
                            "application/javascript": {"schema": {"type": "string"}},
                        },
                    },
                    **_REST_ERRORS,
                },
            },
            "put": {
                "tags": ["REST"],
                "summary": "Create or replace a handle, or add values (`index=`); HTTPS and authentication.",
                "parameters": [
                    _HANDLE_PATH,
                    _param("overwrite", "query", "Replace an existing handle (default true).", _BOOL_PARAM),
                    _param("mintNewSuffix", "query", "Append a fresh suffix to the handle.", _BOOL_PARAM),
                    _param(
                        "index",
                        "query",
                        "Add these values (or `various`) instead of a create.",
                        {"type": "string"},
                    ),
                ],
                "security": auth,
                "requestBody": {"required": True, "content": {JSON: {"schema": _ref("HandleRecordInput")}}},
                "responses": {
                    "200": _json(_ref("WriteResult"), "Written (overwrite)."),
                    "201": _json(_ref("WriteResult"), "Created (overwrite=false)."),
                    **_REST_ERRORS,
                },
            },
            "delete": {
                "tags": ["REST"],
                "summary": "Delete a handle, or only the values at `index=`; HTTPS and authentication.",
                "parameters": [
                    _HANDLE_PATH,
                    _param("index", "query", "Remove these values.", {"type": "integer"}),
                ],
                "security": auth,
                "responses": {"200": _json(_ref("WriteResult"), "Deleted."), **_REST_ERRORS},
            },
        },
        "/api/prefixes": {
            "get": {
                "tags": ["REST"],
                "summary": "List the prefixes homed on this node.",
                "parameters": [
                    _param("page", "query", "Page number (with pageSize).", {"type": "integer"}),
                    _param("pageSize", "query", "Prefixes per page.", {"type": "integer"}),
                    _PRETTY,
                ],
                "security": [{}, *auth],
                "responses": {"200": _json(_ref("PrefixList"), "The prefixes."), **_REST_ERRORS},
            }
        },
        "/api/prefixes/{prefix}": {
            "parameters": [_param("prefix", "path", "The prefix.", {"type": "string"}, required=True)],
            "post": {
                "tags": ["REST"],
                "summary": "Home a prefix on this node (server admin).",
                "security": auth,
                "responses": {"200": _json(_ref("WriteResult"), "Homed."), **_REST_ERRORS},
            },
            "delete": {
                "tags": ["REST"],
                "summary": "Unhome a prefix (server admin).",
                "security": auth,
                "responses": {"200": _json(_ref("WriteResult"), "Unhomed."), **_REST_ERRORS},
            },
        },
        "/api/sessions": {
            "post": {
                "tags": ["REST"],
                "summary": "Open an `Authorization: Handle` session (HTTPS); Basic logs it in at once.",
                "responses": {
                    "201": _json(_ref("Session"), "The session and the nonce to sign."),
                    **_REST_ERRORS,
                },
            }
        },
        "/api/sessions/this": {
            "get": {
                "tags": ["REST"],
                "summary": "The session named by the `Authorization: Handle sessionId=…` header.",
                "responses": {"200": _json(_ref("Session"), "The session."), **_REST_ERRORS},
            },
            "put": {
                "tags": ["REST"],
                "summary": "Log the session in (signature over the nonce).",
                "responses": {
                    **_REST_ERRORS,
                    "200": _json(_ref("Session"), "Logged in."),
                    "401": _json(_ref("Session"), "Not logged in: `error` says why, `nonce` is the next."),
                },
            },
            "delete": {
                "tags": ["REST"],
                "summary": "End the session.",
                "responses": {"204": {"description": "Ended."}, **_REST_ERRORS},
            },
        },
        "/api/resolve": {
            "get": {
                "tags": ["REST"],
                "summary": "Converged resolution: a handle, GS1 key or Digital Link, OID or Ecode.",
                "parameters": [
                    _param("id", "query", "The identifier, in any scheme.", {"type": "string"}, required=True)
                ],
                "responses": {
                    str(s): _json(_ref("ConvergedResolution"), d)
                    for s, d in (
                        (200, "The record the identifier maps to."),
                        (400, "Not an identifier of a known scheme, or malformed."),
                        (404, "No such record."),
                        (405, "Only GET and HEAD."),
                    )
                },
            }
        },
        "/api/openapi.json": {
            "get": {
                "tags": ["REST"],
                "summary": "This description.",
                "responses": {"200": _json({"type": "object", "required": ["openapi"]}, "OpenAPI 3.1.")},
            }
        },
    }


def _snms_paths() -> Schema:
    def answer(data: Schema, what: str) -> Schema:
        schema = {
            "allOf": [_ref("SnmsEnvelope"), {"properties": {"data": {"oneOf": [data, {"type": "null"}]}}}]
        }
        return {"200": _json(schema, f"{what}; `status` says whether it succeeded (HTTP is always 200).")}

    bearer: list[Schema] = [{"bearer": []}]
    login = {
        "tags": ["SNMS"],
        "requestBody": {"required": True, "content": {JSON: {"schema": _ref("SnmsLogin")}}},
        "responses": answer(_ref("SnmsToken"), "A bearer token valid 24 h"),
    }
    item_body = {"required": True, "content": {JSON: {"schema": _ref("SnmsItem")}}}
    batch_results = {"type": "array", "items": _ref("SnmsBatchResult")}
    return {
        "/identity/token": {
            "post": {**login, "summary": "Log in: username = identity handle, password = its secret."}
        },
        "/identity/token/v1": {
            "post": {
                **login,
                "summary": "Log in: password = sha256(hex(sha256(secret)) + yyyy-MM-dd), China time.",
            }
        },
        "/identityv2/data/detail": {
            "get": {
                "tags": ["SNMS"],
                "summary": "One identifier's values.",
                "parameters": [
                    _param("handle", "query", "The identifier.", {"type": "string"}, required=True)
                ],
                "security": bearer,
                "responses": answer(_ref("SnmsRecord"), "The record"),
            }
        },
        "/identityv2/data": {
            "post": {
                "tags": ["SNMS"],
                "summary": "Register an identifier.",
                "security": bearer,
                "requestBody": item_body,
                "responses": answer({"const": True}, "Registered"),
            },
            "put": {
                "tags": ["SNMS"],
                "summary": "Replace an identifier's values (HS_ values kept).",
                "security": bearer,
                "requestBody": item_body,
                "responses": answer({"const": True}, "Updated"),
            },
            "delete": {
                "tags": ["SNMS"],
                "summary": "Delete an identifier.",
                "parameters": [_param("handle", "query", "The identifier.", {"type": "string"})],
                "security": bearer,
                "responses": answer({"const": True}, "Deleted"),
            },
        },
        "/identityv2/data/batchCreate": {
            "post": {
                "tags": ["SNMS"],
                "summary": "Register up to 2000 identifiers; one result per item.",
                "security": bearer,
                "requestBody": {
                    "required": True,
                    "content": {
                        JSON: {"schema": {"type": "array", "items": _ref("SnmsItem"), "maxItems": 2000}}
                    },
                },
                "responses": answer(batch_results, "Per-item results"),
            }
        },
        "/identityv2/data/batchUpdate": {
            "put": {
                "tags": ["SNMS"],
                "summary": "Update up to 2000 identifiers; one result per item.",
                "security": bearer,
                "requestBody": {
                    "required": True,
                    "content": {
                        JSON: {"schema": {"type": "array", "items": _ref("SnmsItem"), "maxItems": 2000}}
                    },
                },
                "responses": answer(batch_results, "Per-item results"),
            }
        },
        "/identityv2/data/batchDelete": {
            "delete": {
                "tags": ["SNMS"],
                "summary": "Delete up to 2000 identifiers; one result per item.",
                "security": bearer,
                "requestBody": {
                    "required": True,
                    "content": {
                        JSON: {"schema": {"type": "array", "items": {"type": "string"}, "maxItems": 2000}}
                    },
                },
                "responses": answer(batch_results, "Per-item results"),
            }
        },
    }


def _gs1_paths() -> Schema:
    link = {
        "Link": {
            "description": "The linkset, its JSON-LD context and the links.",
            "schema": {"type": "string"},
        }
    }
    linkset = {
        "description": "The RFC 9264 linkset (`linkType=linkset`, or `Accept: application/linkset+json`).",
        "headers": link,
        "content": {JSON: {"schema": _ref("Linkset")}, LINKSET: {"schema": _ref("Linkset")}},
    }
    error = {"headers": link, "content": {JSON: {"schema": _ref("Gs1Error")}}}
    operation = {
        "tags": ["GS1"],
        "parameters": [
            _param(
                "tail",
                "path",
                "The key's value, then any qualifiers and data attributes (`…/10/LOT1/21/S1`).",
                {"type": "string"},
                required=True,
            ),
            _param(
                "linkType", "query", "The link type wanted (`gs1:pip`, `linkset`, `all`).", {"type": "string"}
            ),
            _param("context", "query", "The context wanted.", {"type": "string"}),
        ],
        "responses": {
            "200": linkset,
            "300": {**linkset, "description": "Several links of the wanted type: choose one."},
            "307": {
                "description": "Redirect to the chosen link (query string passed on).",
                "headers": {"Location": {"schema": {"type": "string"}}, **link},
            },
            "400": {**error, "description": "Bad syntax or check digit."},
            "404": {**error, "description": "No such key, or no link of the wanted type."},
            "405": {**error, "description": "Only GET, HEAD and OPTIONS."},
        },
    }
    paths: Schema = {}
    for ai in PRIMARY_KEYS:
        paths[f"/{ai}/{{tail}}"] = {"get": {**operation, "summary": f"Resolve a GS1 key with AI ({ai})."}}
    paths["/.well-known/gs1resolver"] = {
        "get": {
            "tags": ["GS1"],
            "summary": "The resolver description file.",
            "responses": {"200": _json(_ref("ResolverDescription"), "What this resolver supports.")},
        }
    }
    return paths


def openapi_document() -> Schema:
    """The whole description (a fresh dict each call)."""
    return {
        "openapi": "3.1.0",
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "info": {
            "title": "idr node HTTP APIs",
            "version": __version__,
            "summary": "Handle.Net 9 REST API, SNMS identifier API and GS1 resolver of an idr node.",
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "servers": [{"url": "/"}],
        "tags": [
            {
                "name": "REST",
                "description": "Handle.Net 9 REST API (writes and credentials over HTTPS only).",
            },
            {"name": "SNMS", "description": "SNMS v5 identifier API (`{status, message, data}` answers)."},
            {"name": "GS1", "description": "GS1 conformant resolver (Digital Link)."},
            {"name": "HRLS", "description": "Reverse lookup, as Handle.Net's reverse-lookup service."},
            {
                "name": "Federation",
                "description": "What a node publishes about itself, the prefix lifecycle, walks, statistics.",
            },
        ],
        "paths": {**_rest_paths(), **_snms_paths(), **_gs1_paths(), **_hrls_paths(), **_federation_paths()},
        "components": {
            "schemas": {**_schemas(), **_federation_schemas()},
            "responses": {"HandleError": _json(_ref("HandleError"), "A Handle-style error.")},
            "securitySchemes": {
                "basic": {
                    "type": "http",
                    "scheme": "basic",
                    "description": "User `index:handle` percent-encoded, password the HS_SECKEY secret.",
                },
                "handle": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "Authorization",
                    "description": "`Handle sessionId=…, id=…, cnonce=…, signature=…` (Handle.Net 9).",
                },
                "bearer": {"type": "http", "scheme": "bearer", "description": "SNMS token."},
            },
        },
    }


@cache
def openapi_json() -> bytes:
    """The description as served (encoded once per process)."""
    return orjson.dumps(openapi_document())
