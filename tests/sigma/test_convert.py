"""Sigma -> KQL: table and field mapping, semantics of values, and clear errors."""

from __future__ import annotations

import textwrap

import pytest

from ctirealm.sigma.convert import convert
from ctirealm.sigma.parse import SigmaRuleError, parse_rule
from ctirealm.sigma.pipelines import load_spec, table_specs


def rule(logsource: dict, detection: dict, **extra: object) -> dict:
    return {"title": "Test rule", "logsource": logsource, "detection": detection, **extra}


LINUX_PROC = {"product": "linux", "category": "process_creation"}
K8S = {"product": "kubernetes", "service": "audit"}


def kql(doc: dict, schemas: dict) -> str:
    return convert(doc, schemas=schemas).kql


def test_linux_process_creation_maps_sysmon_names(schemas: dict) -> None:
    doc = rule(
        LINUX_PROC,
        {
            "sel": {
                "Image|endswith": "/crontab",
                "CommandLine|contains": "-r",
                "ParentImage": "/bin/bash",
                "User": "root",
            },
            "condition": "sel",
        },
    )
    assert kql(doc, schemas) == (
        'DeviceProcessEvents\n| where FolderPath endswith "/crontab" and ProcessCommandLine '
        'contains "-r" and InitiatingProcessFolderPath =~ "/bin/bash" and AccountName =~ "root"'
    )


def test_file_event_maps_target_and_image(schemas: dict) -> None:
    doc = rule(
        {"product": "linux", "category": "file_event"},
        {"sel": {"TargetFilename|startswith": "/etc/cron.d/", "Image": "/usr/bin/vi"}, "condition": "sel"},
    )
    assert kql(doc, schemas) == (
        'DeviceFileEvents\n| where FolderPath startswith "/etc/cron.d/" '
        'and InitiatingProcessFolderPath =~ "/usr/bin/vi"'
    )


def test_kubernetes_nested_fields_are_expressions_not_strings(schemas: dict) -> None:
    doc = rule(
        K8S,
        {
            "sel": {
                "verb": "create",
                "objectRef.resource": "secrets",
                "objectRef.namespace": "kube-system",
                "user.username": "bob",
                "responseStatus.code": 403,
            },
            "condition": "sel",
        },
    )
    text = kql(doc, schemas)
    assert text.startswith("AKSAudit\n")
    assert "'objectRef" not in text and "'user" not in text
    assert 'tostring(ObjectRef.resource) =~ "secrets"' in text
    assert 'tostring(ObjectRef.namespace) =~ "kube-system"' in text
    assert 'tostring(User.username) =~ "bob"' in text
    assert "toint(ResponseStatus.code) == 403" in text


def test_audit_admin_and_azure_services_pick_their_tables(schemas: dict) -> None:
    cases = {
        ("kubernetes", "audit_admin"): "AKSAuditAdmin",
        ("azure", "activitylogs"): "AzureActivity",
        ("azure", "signinlogs"): "SigninLogs",
        ("azure", "auditlogs"): "AuditLogs",
        ("azure", "graphactivitylogs"): "MicrosoftGraphActivityLogs",
        ("azure", "storagebloblogs"): "StorageBlobLogs",
        ("azure", "serviceprincipalsignins"): "AADServicePrincipalSignInLogs",
        ("azure", "keyvault"): "AzureDiagnostics",
        ("m365", "audit"): "OfficeActivity",
        ("m365", "exchange"): "OfficeActivity",
        ("office365", "threat_management"): "OfficeActivity",
    }
    for (product, service), table in cases.items():
        doc = rule({"product": product, "service": service}, {"sel": {"TenantId": "t-1"}, "condition": "sel"})
        assert convert(doc, schemas=schemas).table == table, (product, service)


def test_raw_azure_names_map_to_columns(schemas: dict) -> None:
    activity = rule(
        {"product": "azure", "service": "activitylogs"},
        {
            "sel": {"operationName": "MICROSOFT.KEYVAULT/VAULTS/WRITE", "properties.message": "x"},
            "condition": "sel",
        },
    )
    text = kql(activity, schemas)
    assert 'OperationNameValue =~ "MICROSOFT.KEYVAULT/VAULTS/WRITE"' in text
    assert 'tostring(Properties_d.message) =~ "x"' in text
    audit = rule(
        {"product": "azure", "service": "auditlogs"},
        {
            "sel": {
                "properties.message": "Add user",
                "Status": "success",
                "properties.targetResources|contains": "Admin",
            },
            "condition": "sel",
        },
    )
    text = kql(audit, schemas)
    assert 'OperationName =~ "Add user"' in text and 'Result =~ "success"' in text
    assert 'tostring(TargetResources) contains "Admin"' in text
    signin = rule(
        {"product": "azure", "service": "signinlogs"},
        {
            "sel": {"ResultType": 50126, "properties.appId": "abc", "DeviceDetail.isCompliant": "false"},
            "condition": "sel",
        },
    )
    text = kql(signin, schemas)
    assert 'ResultType =~ "50126"' in text  # a number against a string column compares as text
    assert 'AppId =~ "abc"' in text and 'tostring(DeviceDetail.isCompliant) =~ "false"' in text
    keyvault = rule(
        {"product": "azure", "service": "keyvault"},
        {"sel": {"operationName": "SecretGet", "identity.claim.appid": "g"}, "condition": "sel"},
    )
    text = kql(keyvault, schemas)
    assert 'ResourceProvider =~ "MICROSOFT.KEYVAULT"' in text
    assert 'identity_claim_appid_g =~ "g"' in text


def test_native_columns_pass_through(schemas: dict) -> None:
    doc = rule(
        LINUX_PROC,
        {
            "sel": {
                "ProcessCommandLine|contains": "x",
                "InitiatingProcessFileName": "bash",
                "ProcessId": "42",
            },
            "condition": "sel",
        },
    )
    text = kql(doc, schemas)
    assert 'ProcessCommandLine contains "x"' in text
    assert 'InitiatingProcessFileName =~ "bash"' in text
    assert "ProcessId == 42" in text  # a numeric string against a long column compares as number


def test_wildcards_lists_and_case(schemas: dict) -> None:
    doc = rule(
        LINUX_PROC,
        {
            "sel": {
                "CommandLine": ["a*b", "c?d"],
                "Image|cased": "/Bin/X",
                "User|contains|all": ["ro", "ot"],
            },
            "condition": "sel",
        },
    )
    text = kql(doc, schemas)
    assert 'ProcessCommandLine matches regex "(?is)^a.*b$"' in text
    assert 'ProcessCommandLine matches regex "(?is)^c.d$"' in text
    assert 'FolderPath == "/Bin/X"' in text
    assert 'AccountName contains "ro" and AccountName contains "ot"' in text


def test_list_fields_match_elements(schemas: dict) -> None:
    doc = rule(
        K8S, {"sel": {"user.groups": "system:masters", "sourceIPs|startswith": "10."}, "condition": "sel"}
    )
    text = kql(doc, schemas)
    assert 'tostring(User.groups) contains "\\"system:masters\\""' in text
    assert 'tostring(SourceIps) contains "\\"10."' in text


@pytest.mark.parametrize(
    ("detection", "logsource", "message"),
    [
        ({"sel": {"Foo": "x"}, "condition": "sel"}, LINUX_PROC, "unknown field 'Foo'"),
        (
            {"sel": {"CurrentDirectory": "/tmp"}, "condition": "sel"},
            LINUX_PROC,
            "unknown field 'CurrentDirectory': no column of DeviceProcessEvents",
        ),
        ({"keywords": ["evil"], "condition": "keywords"}, LINUX_PROC, "keyword"),
        ({"sel": {"CommandLine|expand": "%x%"}, "condition": "sel"}, LINUX_PROC, "placeholder %x%"),
        ({"sel": {"CommandLine|re": "a(?=b)"}, "condition": "sel"}, LINUX_PROC, "lookaround"),
        (
            {"sel": {"Status": "Success"}, "condition": "sel"},
            {"product": "azure", "service": "signinlogs"},
            "JSON",
        ),
        (
            {"sel": {"a0": "x"}, "condition": "sel"},
            {"product": "linux", "service": "auditd"},
            "unsupported logsource {product: linux, service: auditd}",
        ),
    ],
)
def test_errors_name_rule_construct_and_reason(
    schemas: dict, detection: dict, logsource: dict, message: str
) -> None:
    with pytest.raises(SigmaRuleError) as info:
        convert(rule(logsource, detection), schemas=schemas)
    assert message in str(info.value)
    assert str(info.value).startswith("'Test rule'")


def test_correlation_and_malformed_rules_fail_at_parse() -> None:
    correlation = textwrap.dedent("""\
        title: corr
        correlation: {type: event_count, rules: [a], group-by: [x], timespan: 1h,
                      condition: {gte: 2}}
    """)
    assert "correlation rules are not supported" in parse_rule(correlation).error
    assert "invalid YAML at line 2" in parse_rule("title: x\n  bad: [\n").error
    assert (
        "missing required section 'detection'" in parse_rule("title: x\nlogsource: {product: linux}\n").error
    )
    with pytest.raises(SigmaRuleError, match="not a valid Sigma rule"):
        convert("title: x\ndetection: {condition: sel}\nlogsource: {}\n", schemas={})


def test_conversion_does_not_mutate_the_rule(schemas: dict) -> None:
    parsed = parse_rule(rule(LINUX_PROC, {"sel": {"Image": "/x"}, "condition": "sel"}))
    first = convert(parsed, schemas=schemas).kql
    assert convert(parsed, schemas=schemas).kql == first


def test_every_alias_in_the_spec_resolves(schemas: dict) -> None:
    spec = load_spec()
    bound = table_specs(schemas, spec)
    assert set(bound) == set(spec["tables"]) == set(schemas)
    for tspec in bound.values():
        for name in tspec.aliases:
            target = tspec.resolve(name)  # raises on an alias to a missing column
            assert target.expr
