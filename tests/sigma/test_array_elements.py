"""Fields inside JSON arrays mean "any element matches", as Sigma reads them: AuditLogs'
TargetResources (and their modifiedProperties), OfficeActivity's ExtendedProperties. Executed on
rows shaped like real Entra audit and Office 365 records; fields no table holds fail with why."""

from __future__ import annotations

import json

import pytest

from ctirealm.engine import LocalEngine
from ctirealm.sigma.convert import convert
from ctirealm.sigma.parse import SigmaRuleError


def _prop(name: str, new: str, old: str | None = None) -> dict:
    # Entra stores property values as JSON text: a string value keeps its quotes
    return {"displayName": name, "oldValue": old, "newValue": new}


AUDIT = [
    {
        "Id": "Directory_role_sp",
        "OperationName": "Add member to role",
        "Category": "RoleManagement",
        "TargetResources": [
            {
                "id": "4c1f",
                "displayName": "Global Administrator",
                "type": "Role",
                "modifiedProperties": [_prop("Role.DisplayName", '"Global Administrator"')],
            },
            {
                "id": "9b2e",
                "displayName": "backup-app",
                "type": "Service Principal",
                "modifiedProperties": [],
                "administrativeUnits": [],
            },
        ],
    },
    # "Service Principal" only as a display name: a text search would match, equality must not
    {
        "Id": "Directory_role_user",
        "OperationName": "Add member to role",
        "Category": "RoleManagement",
        "TargetResources": [
            {
                "id": "77aa",
                "displayName": "Service Principal",
                "type": "User",
                "userPrincipalName": "sp@contoso.example",
            }
        ],
    },
    {
        "Id": "Directory_consent_user",
        "OperationName": "Consent to application",
        "Category": "ApplicationManagement",
        "TargetResources": [
            {
                "id": "0e3d",
                "displayName": "Notes App",
                "type": "ServicePrincipal",
                "modifiedProperties": [
                    _prop("ConsentContext.IsAdminConsent", '"False"'),
                    _prop("ConsentContext.IsAppOnly", '"False"'),
                    _prop("ConsentAction.Permissions", '"[] => [[Scope: Mail.Read]]"'),
                ],
            }
        ],
    },
    {
        "Id": "Directory_consent_admin",
        "OperationName": "Consent to application",
        "Category": "ApplicationManagement",
        "TargetResources": [
            {
                "id": "0e3e",
                "displayName": "HR App",
                "type": "ServicePrincipal",
                "modifiedProperties": [
                    _prop("ConsentContext.IsAdminConsent", '"True"'),
                    _prop("ConsentContext.IsAppOnly", '"False"'),
                ],
            }
        ],
    },
    {
        "Id": "Directory_mfa_off",
        "OperationName": "Update user",
        "Category": "UserManagement",
        "LoggedByService": "Core Directory",
        "TargetResources": [
            {
                "id": "5d6f",
                "type": "User",
                "userPrincipalName": "ann@contoso.example",
                "modifiedProperties": [
                    _prop(
                        "StrongAuthenticationRequirement",
                        '[{"RelyingParty":"*","State":0,"RememberDevicesNotIssuedBefore":'
                        '"2026-03-05T10:00:00Z"}]',
                        '[{"RelyingParty":"*","State":1}]',
                    )
                ],
            }
        ],
    },
    {
        "Id": "Directory_empty",
        "OperationName": "Update user",
        "Category": "UserManagement",
        "TargetResources": [],
    },
]

OFFICE = [
    {
        "OfficeId": "o-cmsi",
        "Operation": "UserLoggedIn",
        "ResultStatus": "Success",
        "ApplicationId": "9ba1a5c7-f17a-4de9-a1f1-6178c8d51223",
        "ExtendedProperties": json.dumps(
            [
                {"Name": "ResultStatusDetail", "Value": "Redirect"},
                {"Name": "RequestType", "Value": "Cmsi:Cmsi"},
            ]
        ),
    },
    {
        "OfficeId": "o-login",
        "Operation": "UserLoggedIn",
        "ResultStatus": "Success",
        "ApplicationId": "9ba1a5c7-f17a-4de9-a1f1-6178c8d51223",
        "ExtendedProperties": json.dumps(
            [{"Name": "RequestType", "Value": "Login:login"}, {"Name": "UserAgent", "Value": "Cmsi:Cmsi"}]
        ),
    },
]


@pytest.fixture(scope="module")
def engine(schemas: dict):
    engine = LocalEngine.from_tables({"AuditLogs": AUDIT, "OfficeActivity": OFFICE}, schemas)
    yield engine
    engine.close()


def _rule(detection: dict, product: str = "azure", service: str = "auditlogs") -> dict:
    return {
        "title": "Array fields",
        "id": "5e0c1a2b-0000-4000-8000-000000000002",
        "status": "test",
        "logsource": {"product": product, "service": service},
        "detection": detection,
        "level": "low",
    }


def _ids(engine: LocalEngine, schemas: dict, rule: dict) -> list[str]:
    conversion = convert(rule, schemas=schemas)
    key = "OfficeId" if conversion.table == "OfficeActivity" else "Id"
    return sorted(r[0] for r in engine.query(f"{conversion.kql}\n| project {key}").rows)


@pytest.mark.parametrize(
    ("detection", "expected"),
    [
        # SigmaHQ azure_app_role_added: an element's type, not the array's text
        (
            {
                "sel": {
                    "targetResources.type": "Service Principal",
                    "properties.message": ["Add member to role", "Add eligible member to role"],
                },
                "condition": "sel",
            },
            ["Directory_role_sp"],
        ),
        (
            {"sel": {"targetResources.type": "service principal"}, "condition": "not sel"},
            [
                "Directory_consent_admin",
                "Directory_consent_user",
                "Directory_empty",
                "Directory_mfa_off",
                "Directory_role_user",
            ],
        ),
        (
            {"sel": {"TargetResources.displayName|startswith": "service"}, "condition": "sel"},
            ["Directory_role_user"],
        ),
        # SigmaHQ azure_user_account_mfa_disable: nested arrays, and the value's own text
        (
            {
                "sel": {
                    "LoggedByService": "Core Directory",
                    "OperationName": "Update user",
                    "TargetResources.ModifiedProperties.DisplayName": "StrongAuthenticationRequirement",
                    "TargetResources.ModifiedProperties.NewValue|contains": 'State":0',
                },
                "condition": "sel",
            },
            ["Directory_mfa_off"],
        ),
        (
            {"sel": {"TargetResources.ModifiedProperties.OldValue|contains": 'State":0'}, "condition": "sel"},
            [],
        ),
        # SigmaHQ azure_app_end_user_consent: a named modified property, quotes dropped
        ({"sel": {"ConsentContext.IsAdminConsent": "false"}, "condition": "sel"}, ["Directory_consent_user"]),
        ({"sel": {"ConsentContext.IsAdminConsent": "true"}, "condition": "sel"}, ["Directory_consent_admin"]),
        (
            {"sel": {"ConsentContext.IsAppOnly": "False"}, "condition": "sel"},
            ["Directory_consent_admin", "Directory_consent_user"],
        ),
        (
            {
                "a": {"ConsentContext.IsAdminConsent": "false"},
                "b": {"Category": "RoleManagement"},
                "condition": "a or b",
            },
            ["Directory_consent_user", "Directory_role_sp", "Directory_role_user"],
        ),
    ],
)
def test_audit_array_fields_match_elements(
    engine: LocalEngine, schemas: dict, detection: dict, expected: list[str]
) -> None:
    assert _ids(engine, schemas, _rule(detection)) == expected


def test_office_extended_property(engine: LocalEngine, schemas: dict) -> None:
    rule = _rule(
        {"sel": {"Operation": "UserLoggedIn", "RequestType": "Cmsi:Cmsi"}, "condition": "sel"},
        product="m365",
        service="audit",
    )
    assert _ids(engine, schemas, rule) == ["o-cmsi"]


def test_null_inside_elements_is_refused(schemas: dict) -> None:
    with pytest.raises(SigmaRuleError, match="inside the elements of the array TargetResources"):
        convert(_rule({"sel": {"targetResources.type": None}, "condition": "sel"}), schemas=schemas)


@pytest.mark.parametrize(
    ("field", "service", "reason"),
    [
        ("properties.message", ("azure", "signinlogs"), "AuthenticationProtocol"),
        ("Directionality", ("m365", "audit"), "EmailDirection"),
        ("CurrentDirectory", None, "no working directory"),
    ],
)
def test_unmapped_fields_say_why(schemas: dict, field: str, service: tuple | None, reason: str) -> None:
    rule = _rule({"sel": {field: "x"}, "condition": "sel"}, *(service or ("linux", "")))
    if service is None:
        rule["logsource"] = {"product": "linux", "category": "process_creation"}
    with pytest.raises(SigmaRuleError, match=f"unknown field '{field}'.*{reason}"):
        convert(rule, schemas=schemas)
