"""The provider-info dict and the connection forms, kept in one place.

Airflow >= 3.2 renders connection forms from ``conn-fields`` / ``ui-field-behaviour`` in this dict without
importing hooks; the hooks' ``get_ui_field_behaviour`` / ``get_connection_form_widgets`` (for 3.1) read the
same definitions from here, so the two can never disagree.
"""

from __future__ import annotations

from typing import Any

from airflow_provider_runwatch import __version__

PACKAGE = "airflow_provider_runwatch"

#: The network extras every connection type has (core/network.py reads them; docs/networking.md explains them).
NETWORK_FIELDS: dict[str, dict[str, Any]] = {
    "proxies": {
        "label": "Proxy",
        "description": (
            "Egress proxy URL, http://user:password@proxy:3128, or a JSON mapping by scheme "
            '{"https": "http://proxy:3128"}. Empty: HTTPS_PROXY/NO_PROXY from the environment (see Trust environment).'
        ),
        # A secret: the URL may carry the proxy's password (Airflow >= 3.2 also masks extras named "proxies").
        "schema": {"type": ["string", "null"], "format": "password"},
    },
    "verify": {
        "label": "Verify TLS",
        "description": (
            "true (default), false (no certificate check: unsafe), or the path of a CA bundle on the workers and "
            "triggerers, e.g. a TLS-inspecting proxy's private CA."
        ),
        "schema": {"type": ["string", "null"]},
    },
    "cert": {
        "label": "Client certificate",
        "description": 'Path of a PEM client certificate (with its key), or ["cert.pem", "key.pem"] (mTLS gateways).',
        "schema": {"type": ["string", "null"]},
    },
    "trust_env": {
        "label": "Trust environment",
        "description": (
            "Read HTTPS_PROXY, HTTP_PROXY, ALL_PROXY, NO_PROXY, SSL_CERT_FILE, SSL_CERT_DIR and REQUESTS_CA_BUNDLE "
            "(default true)."
        ),
        "schema": {"type": ["boolean", "null"]},
    },
}

#: connection type -> (hook class, display name, ui-field-behaviour, conn-fields)
CONNECTION_TYPES: dict[str, dict[str, Any]] = {
    "gumloop": {
        "hook-class-name": f"{PACKAGE}.hooks.gumloop.GumloopHook",
        "hook-name": "Gumloop",
        "ui-field-behaviour": {
            "hidden-fields": ["schema", "port"],
            "relabeling": {"host": "API base URL", "login": "User ID", "password": "API key"},
            "placeholders": {
                "host": "https://api.gumloop.com/api/v1 (leave empty for the default)",
                "login": "your Gumloop user id (sent as user_id and x-auth-key)",
                "password": "Gumloop API key (personal or team)",
            },
        },
        "conn-fields": {
            "project_id": {
                "label": "Project ID",
                "description": "Workspace/project id; sent as project_id on the legacy endpoints.",
                "schema": {"type": ["string", "null"]},
            },
            "team_id": {
                "label": "Team ID",
                "description": "Set when the key is a team key: added as ?team_id= to every request.",
                "schema": {"type": ["string", "null"]},
            },
            "max_concurrent_runs": {
                "label": "Max concurrent runs (plan)",
                "description": (
                    "Your plan's limit of unfinished agent runs (Free 5, Pro 25, Enterprise 100): the default "
                    "max_concurrency of GumloopSessionBatchOperator. Empty: 5."
                ),
                "schema": {"type": ["integer", "null"], "minimum": 1, "maximum": 1000},
            },
            **NETWORK_FIELDS,
        },
    },
    "gloriamundo": {
        "hook-class-name": f"{PACKAGE}.hooks.gloriamundo.GloriaMundoHook",
        "hook-name": "GloriaMundo",
        "ui-field-behaviour": {
            "hidden-fields": ["schema", "port", "login"],
            "relabeling": {"host": "API base URL", "password": "API key"},
            "placeholders": {
                "host": "https://app.gloriamundo.com/api/v1 (leave empty for the default)",
                "password": "gm_live_...",
            },
        },
        "conn-fields": {
            # Not "auth_header": Airflow (3.3) treats extras with that name as secrets, so the UI and the REST API
            # would show "***" instead of the choice. The hook still reads a legacy "auth_header".
            "key_header": {
                "label": "Send key as",
                "description": "Authorization: Bearer (default) or the X-API-Key header.",
                "schema": {
                    "type": ["string", "null"],
                    "enum": ["bearer", "x-api-key", None],
                    # How the UI's dropdown names the choices (an unset field shows "null" otherwise).
                    "values_display": {
                        "bearer": "Authorization: Bearer <key>",
                        "x-api-key": "X-API-Key: <key>",
                        "null": "Authorization: Bearer <key> (default)",
                    },
                },
            },
            "polls_per_minute": {
                "label": "Status polls per minute (per key)",
                "description": "Shared budget for all runs of this key in one process; the API allows 60.",
                "schema": {"type": ["number", "null"], "minimum": 1, "maximum": 60},
            },
            **NETWORK_FIELDS,
        },
    },
    "puffle": {
        "hook-class-name": f"{PACKAGE}.hooks.puffle.PuffleHook",
        "hook-name": "Puffle",
        "ui-field-behaviour": {
            "hidden-fields": ["schema", "port", "login"],
            "relabeling": {"host": "API base URL", "password": "API key"},
            "placeholders": {
                "host": "https://app.puffle.ai (leave empty for the default)",
                "password": "pk_live_... (an admin key: agent chat refuses other keys)",
            },
        },
        "conn-fields": {**NETWORK_FIELDS},
    },
}


def ui_field_behaviour(conn_type: str) -> dict[str, Any]:
    """The legacy (pre-3.2) shape of the field behaviour, for hooks' ``get_ui_field_behaviour``."""
    behaviour = CONNECTION_TYPES[conn_type]["ui-field-behaviour"]
    return {
        "hidden_fields": list(behaviour["hidden-fields"]),
        "relabeling": dict(behaviour["relabeling"]),
        "placeholders": dict(behaviour["placeholders"]),
    }


def connection_form_widgets(conn_type: str) -> dict[str, Any]:
    """Legacy wtforms widgets (Airflow 3.1 with the FAB provider installed)."""
    from flask_appbuilder.fieldwidgets import BS3TextFieldWidget  # type: ignore[import-not-found,unused-ignore]
    from wtforms import StringField  # type: ignore[import-untyped,import-not-found,unused-ignore]

    return {
        name: StringField(field["label"], widget=BS3TextFieldWidget(), description=field.get("description"))
        for name, field in CONNECTION_TYPES[conn_type]["conn-fields"].items()
    }


#: integration name -> (external doc URL, tags). The URLs are the vendors' own app origins (the only
#: addresses their API documentation names); the names match the hooks/operators/... entries below.
INTEGRATIONS: dict[str, dict[str, Any]] = {
    "Gumloop": {"module": "gumloop", "external-doc-url": "https://www.gumloop.com", "tags": ["ai", "agents"]},
    "GloriaMundo": {
        "module": "gloriamundo",
        "external-doc-url": "https://app.gloriamundo.com",
        "tags": ["ai", "agents", "workflows"],
    },
    "Puffle": {"module": "puffle", "external-doc-url": "https://app.puffle.ai", "tags": ["ai", "agents"]},
}

#: ``@task.<name>`` -> the decorator function (TaskFlow API), one per operator that takes one message or input.
TASK_DECORATORS: dict[str, str] = {
    "puffle_chat": f"{PACKAGE}.decorators.puffle.puffle_chat_task",
    "gumloop_session": f"{PACKAGE}.decorators.gumloop.gumloop_session_task",
    "gloriamundo_workflow": f"{PACKAGE}.decorators.gloriamundo.gloriamundo_workflow_task",
}

#: Extra links the operators show; Airflow imports each to check it.
EXTRA_LINKS = [f"{PACKAGE}.links.RunLink", f"{PACKAGE}.links.GumloopRunLink"]


def _modules(kind: str) -> list[dict[str, Any]]:
    """The ``hooks`` / ``operators`` / ``sensors`` / ``triggers`` entries: one module per integration."""
    return [
        {"integration-name": name, "python-modules": [f"{PACKAGE}.{kind}.{spec['module']}"]}
        for name, spec in INTEGRATIONS.items()
    ]


def provider_info() -> dict[str, Any]:
    return {
        "package-name": "airflow-provider-runwatch",
        "name": "Runwatch (hosted AI agent runs)",
        "description": "Run Gumloop, GloriaMundo and Puffle agents and workflows from Airflow, deferrable.",
        "versions": [__version__],
        "integrations": [
            {"integration-name": name, "external-doc-url": spec["external-doc-url"], "tags": list(spec["tags"])}
            for name, spec in INTEGRATIONS.items()
        ],
        "connection-types": [
            {
                "connection-type": conn_type,
                **{k: v for k, v in spec.items() if not (k == "conn-fields" and not v)},
            }
            for conn_type, spec in CONNECTION_TYPES.items()
        ],
        "hooks": _modules("hooks"),
        "operators": _modules("operators"),
        "sensors": _modules("sensors"),
        "triggers": _modules("triggers"),
        "extra-links": list(EXTRA_LINKS),
        "task-decorators": [{"name": name, "class-name": path} for name, path in TASK_DECORATORS.items()],
    }
