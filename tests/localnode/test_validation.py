"""The local node validates action input/output like the NS8 agent (gojsonschema v1.2.0).

Expected values below were produced by gojsonschema v1.2.0 itself (through
the same conversion as core/agent/validation.go), so these tests pin the
shapes the module's UI and Robot tests see on a real node.
"""

from __future__ import annotations

import json

import pytest

from localnode.validation import (
    SchemaError,
    ValidationFault,
    error_message,
    to_json,
    validate,
    validate_file,
    validate_json_string,
)

# The shape of imapsync's create-task input schema (draft-07, idn-hostname, anyOf).
CREATE_TASK = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "$id": "http://schema.nethserver.org/imapsync/create_task.json",
    "type": "object",
    "required": ["task_id", "localuser", "remotehostname", "remoteport", "security"],
    "additionalProperties": False,
    "properties": {
        "task_id": {"type": "string"},
        "localuser": {"type": "string", "minLength": 1},
        "remoteusername": {"type": "string", "anyOf": [{"minLength": 1}, {"format": "email", "minLength": 1}]},
        "remotehostname": {"type": "string", "format": "idn-hostname"},
        "remoteport": {"type": "integer", "minimum": 1, "maximum": 65535},
        "security": {"type": "string", "enum": ["", "tls", "ssl"]},
        "delete_local": {"type": "boolean"},
    },
}
GOOD = {"task_id": "", "localuser": "john", "remoteusername": "john@example.com",
        "remotehostname": "imap.example.com", "remoteport": 143, "security": "tls", "delete_local": True}


def err(field: str, etype: str, value) -> dict:
    parameter = field.split(".", 1)[0]
    return {"parameter": parameter, "error": f"{parameter}_{etype}", "value": value, "field": field}


def test_valid_input_has_no_errors():
    assert validate(CREATE_TASK, GOOD) == []


def test_required_is_reported_on_root_with_whole_input():
    data = {k: v for k, v in GOOD.items() if k != "localuser"}
    errors = validate(CREATE_TASK, data)
    assert errors == [err("(root)", "required", data)]
    assert errors[0].description == "localuser is required"
    assert error_message(errors) == "Validation errors: [(root): localuser is required]\n"


def test_required_in_nested_object_uses_parent_path():
    schema = {"type": "object", "properties": {"a": {"type": "object", "required": ["b"]}}}
    assert validate(schema, {"a": {"c": 1}}) == [err("a", "required", {"c": 1})]


def test_additional_property_is_reported_on_parent_with_its_own_value():
    errors = validate(CREATE_TASK, dict(GOOD, foo={"x": 1}))
    assert errors == [err("(root)", "additional_property_not_allowed", {"x": 1})]
    assert str(errors[0]) == "(root): Additional property foo is not allowed"
    nested = {"properties": {"a": {"additionalProperties": False, "properties": {"b": {}}}}}
    assert validate(nested, {"a": {"b": 1, "c": 2}}) == [err("a", "additional_property_not_allowed", 2)]


def test_type_error_hides_the_other_keywords_of_that_node():
    errors = validate({"type": "string", "minLength": 2, "enum": ["a"]}, 5)
    assert errors == [err("(root)", "invalid_type", 5)]
    assert errors[0].description == "Invalid type. Expected: string, given: integer"
    multi = validate({"type": ["string", "null"]}, 1.5)
    assert multi[0].description == "Invalid type. Expected: [string,null], given: number"


def test_integral_float_is_an_integer_and_reported_as_integer():
    assert validate({"type": "integer"}, 2.0) == []
    assert validate({"type": "integer", "maximum": 1}, 2.0) == [err("(root)", "number_lte", 2)]


def test_enum_pattern_and_lengths_descriptions():
    errors = validate(CREATE_TASK, dict(GOOD, security="x", localuser=""))
    assert sorted(errors, key=lambda e: e["field"]) == [
        err("localuser", "string_gte", ""),
        err("security", "enum", "x"),
    ]
    texts = sorted(str(e) for e in errors)
    assert texts == ["localuser: String length must be greater than or equal to 1",
                     'security: security must be one of the following: "", "tls", "ssl"']
    schema = {"type": "string", "maxLength": 3, "pattern": "^[a-z]+$"}
    errors = validate(schema, "abcdE")
    assert [e["error"] for e in errors] == ["(root)_string_lte", "(root)_pattern"]
    assert [e.description for e in errors] == ["String length must be less than or equal to 3",
                                               "Does not match pattern '^[a-z]+$'"]


def test_go_regexp_dollar_does_not_accept_a_trailing_newline():
    assert validate({"pattern": "^[a-z]+$"}, "abc") == []
    assert validate({"pattern": "^[a-z]+$"}, "abc\n") == [err("(root)", "pattern", "abc\n")]
    assert validate({"pattern": "^(?i)abc$"}, "ABC") == []


def test_number_bounds_use_go_number_formatting():
    errors = validate(CREATE_TASK, dict(GOOD, remoteport=0))
    assert errors == [err("remoteport", "number_gte", 0)]
    assert errors[0].description == "Must be greater than or equal to 1"
    errors = validate({"maximum": 1000000, "exclusiveMinimum": 0.5, "multipleOf": 0.1}, 20000000.05)
    assert [e.description for e in errors] == ["Must be a multiple of 0.1", "Must be less than or equal to 1e+06"]
    assert validate({"exclusiveMaximum": 10}, 10)[0].description == "Must be less than 10"
    assert validate({"exclusiveMinimum": 0.1}, 0.1)[0].description == "Must be greater than 0.1"
    assert validate({"multipleOf": 0.1}, 0.3) == []


def test_any_of_reports_itself_then_the_closest_branch():
    errors = validate(CREATE_TASK, dict(GOOD, remoteusername=""))
    assert errors == [err("remoteusername", "number_any_of", ""), err("remoteusername", "string_gte", "")]
    assert errors[0].description == "Must validate at least one schema (anyOf)"


def test_one_of_all_of_not():
    assert validate({"oneOf": [{"type": "string"}, {"minLength": 1}]}, "abc") == [err("(root)", "number_one_of", "abc")]
    errors = validate({"allOf": [{"minimum": 5}, {"maximum": 0}]}, 3)
    assert [e["error"] for e in errors] == ["(root)_number_gte", "(root)_number_lte", "(root)_number_all_of"]
    assert validate({"not": {"type": "string"}}, "x") == [err("(root)", "number_not", "x")]


def test_arrays():
    schema = {"type": "array", "minItems": 5, "uniqueItems": True, "items": {"type": "integer"}}
    errors = validate(schema, [1, 1, "x", 1])
    assert [e["error"] for e in errors] == ["2_invalid_type", "(root)_array_min_items", "(root)_unique", "(root)_unique"]
    assert [e.description for e in errors[2:]] == ["array items[0,1] must be unique", "array items[1,3] must be unique"]
    nested = {"items": {"type": "object", "properties": {"x": {"type": "string"}}}}
    assert validate(nested, [{"x": "a"}, {"x": 1}]) == [err("1.x", "invalid_type", 1)]


def test_format_hostname_accepts_ipv4_and_rejects_bad_names():
    schema = {"type": "object", "properties": {"h": {"type": "string", "format": "hostname"}}}
    assert validate(schema, {"h": "10.5.4.1"}) == []
    assert validate(schema, {"h": "mail.example.com"}) == []
    errors = validate(schema, {"h": "bad_host"})
    assert errors == [err("h", "format", "bad_host")]
    assert errors[0].description == "Does not match format 'hostname'"


def test_unknown_formats_are_ignored_known_ones_checked():
    assert validate(CREATE_TASK, dict(GOOD, remotehostname="!! not a host !!")) == []
    assert validate({"format": "whatever"}, "x") == []
    cases = {"email": ("a@b.c", "a"), "ipv4": ("1.2.3.4", "256.1.1.1"), "ipv6": ("::1", "1.2.3.4"),
             "date": ("2024-02-29", "2023-02-29"), "date-time": ("2024-01-01T12:00:00Z", "2024-01-01 12:00"),
             "uuid": ("123e4567-e89b-12d3-a456-426614174000", "123E4567-E89B-12D3-A456-426614174000"),
             "uri": ("http://a.b/c", "a.b"), "json-pointer": ("/a/b", "a")}
    for fmt, (good, bad) in cases.items():
        assert validate({"format": fmt}, good) == [], fmt
        assert validate({"format": fmt}, bad) == [err("(root)", "format", bad)], fmt


def test_ref_to_validator_definitions_id():
    definitions = {
        "$id": "http://schema.nethserver.org/mail.json",
        "$defs": {"name": {"type": "string", "pattern": "^[a-z]+$"}, "port": {"type": "integer", "minimum": 1}},
    }
    schema = {"type": "object", "properties": {
        "n": {"$ref": "http://schema.nethserver.org/mail.json#/$defs/name"},
        "p": {"$ref": "http://schema.nethserver.org/mail.json#/$defs/port"},
    }}
    assert validate(schema, {"n": "abc", "p": 1}, definitions) == []
    errors = validate(schema, {"n": "A1", "p": 0}, definitions)
    assert errors == [err("n", "pattern", "A1"), err("p", "number_gte", 0)]
    with pytest.raises(SchemaError):
        validate(schema, {"n": "abc"})  # without the definitions the reference does not resolve


def test_local_ref_and_bad_schemas():
    schema = {"$ref": "#/definitions/a", "definitions": {"a": {"type": "string"}}}
    assert validate(schema, 1) == [err("(root)", "invalid_type", 1)]
    with pytest.raises(SchemaError, match="Object has no key 'definitions'"):
        validate({"$ref": "#/definitions/missing"}, 1)
    with pytest.raises(SchemaError, match="minLength must be of an integer"):
        validate({"minLength": 1.5}, "")


def test_message_and_json_output_match_the_agent():
    data = {k: v for k, v in GOOD.items() if k not in ("localuser", "security")}
    data["remoteport"] = 70000
    errors = validate(CREATE_TASK, data)
    assert error_message(errors) == (
        "Validation errors: [(root): localuser is required (root): security is required "
        "remoteport: Must be less than or equal to 65535]\n"
    )
    out = to_json(errors)
    assert out.startswith('[{"parameter":"(root)","error":"(root)_required","value":{"delete_local":true,')
    assert json.loads(out) == [dict(e) for e in errors]
    assert json.loads(json.dumps(errors)) == json.loads(out)  # ResultError serialises as the 4 keys only
    assert to_json([err("x", "enum", "<a&b>")]) == (
        '[{"parameter":"x","error":"x_enum","value":"\\u003ca\\u0026b\\u003e","field":"x"}]')
    assert error_message([]) == "Validation errors: []\n"


def test_validate_file_reads_definitions_and_reports_faults(tmp_path):
    (tmp_path / "validator-definitions.json").write_text(json.dumps(
        {"$id": "http://schema.example/defs.json", "definitions": {"p": {"type": "integer"}}}))
    schema_path = tmp_path / "validate-input.json"
    schema_path.write_text(json.dumps({"properties": {"p": {"$ref": "http://schema.example/defs.json#/definitions/p"}}}))
    assert validate_file(str(schema_path), {"p": 1}, str(tmp_path)) == []
    assert validate_file(str(schema_path), {"p": "x"}, str(tmp_path)) == [err("p", "invalid_type", "x")]
    with pytest.raises(ValidationFault, match=r"^Failed to read schema file .*/nope.json: open .*: no such file"):
        validate_file(str(tmp_path / "nope.json"), {}, str(tmp_path))
    with pytest.raises(ValidationFault, match=r"^JSON unmarshal error: invalid character '2' after top-level value"):
        validate_json_string(str(schema_path), "[1] 2", str(tmp_path))
    with pytest.raises(ValidationFault, match=r"^JSON unmarshal error: unexpected end of JSON input"):
        validate_json_string(str(schema_path), "", str(tmp_path))
