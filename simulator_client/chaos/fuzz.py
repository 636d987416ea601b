"""Schema-driven fuzzing of every endpoint in the service's OpenAPI document.

Bodies are generated with hypothesis from each operation's request schema: well-formed
objects whose fields take valid, boundary and wrong-typed values (huge integers,
NaN/Infinity, long lists, hostile strings, missing and extra keys, real event ids from a
pool), arbitrary JSON documents, and raw bytes (not JSON, often not UTF-8) under any
content type (JSON, text, octet-stream, forms, multipart, none, garbage). Every answer
must be below 500, and every rejection a 4xx JSON body whose ``detail`` says what is
wrong.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(),
                         st.text(max_size=20))
JSON_VALUES = st.recursive(
    JSON_SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=5),
                                          st.dictionaries(st.text(max_size=8), inner,
                                                          max_size=5)),
    max_leaves=20)
HOSTILE_TEXT = st.sampled_from(["*", "a:b", "a b", "x" * 500, "", "\x00", "é", "{x}",
                                "'; FLUSHALL", "ialp:policy:current", "\n\r"])
CONTENT_TYPES = st.one_of(
    st.none(),  # no content-type header at all
    st.sampled_from([b"application/json", b"text/plain", b"application/octet-stream",
                     b"application/x-www-form-urlencoded", b"multipart/form-data",
                     b"multipart/form-data; boundary=----x", b"text/plain; charset=utf-16",
                     b"application/json; charset=latin-1", b"application/problem+json",
                     b"*/*", b"", b";", b"application/json; charset=\xff"]),
    st.binary(min_size=1, max_size=40).filter(
        lambda b: all(0x21 <= c <= 0x7E or c >= 0x80 or c in (0x20, 0x09) for c in b)
        and b == b.strip(b" \t")))
"""Content-type header values: any octets HTTP/1.1 allows in a field value (visible
ASCII, obs-text 0x80-0xff, inner spaces and tabs)."""
RAW_BODIES = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=60).map(lambda t: t.encode("utf-16")),  # valid text, not UTF-8
    st.sampled_from([b"\xff\xfe{\x80", b"\x80", b'{"user_id": "\xe9"}', b"a=\xff&b=1",
                     b"------x\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n"
                     b"\xff\r\n------x--\r\n"]))
"""Request bodies as raw bytes."""


def _resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if ref:
        name = ref.rsplit("/", 1)[-1]
        return _resolve(spec, spec["components"]["schemas"][name])
    return schema


def value_strategy(spec: dict[str, Any], schema: dict[str, Any],
                   pools: dict[str, list[Any]], name: str = "") -> st.SearchStrategy[Any]:
    """Valid, boundary and wrong values for one schema node."""
    schema = _resolve(spec, schema)
    wrong = st.one_of(JSON_VALUES, HOSTILE_TEXT)
    if "anyOf" in schema:
        return st.one_of(*[value_strategy(spec, s, pools, name) for s in schema["anyOf"]])
    kind = schema.get("type")
    valid: st.SearchStrategy[Any]
    if kind == "integer":
        lo, hi = schema.get("minimum"), schema.get("maximum")
        edges = [x for x in (lo, hi, -1, 0, 1, 2**63, 2**64, -(2**63) - 1, 10**30)
                 if x is not None]
        valid = st.one_of(st.integers(min_value=lo, max_value=hi).filter(
            lambda x: abs(x) < 10**6) if lo is not None else st.integers(-5, 60),
            st.sampled_from(edges), st.integers())
    elif kind == "number":
        valid = st.one_of(st.floats(-10, 10), st.floats(allow_nan=True, allow_infinity=True),
                          st.sampled_from([1e308, -1e308, 1e30]))
    elif kind == "boolean":
        valid = st.booleans()
    elif kind == "string":
        valid = st.one_of(st.text(max_size=40), st.text(alphabet="0123456789abcdef",
                                                        min_size=1, max_size=128))
        if pools.get(name):
            valid = st.one_of(st.sampled_from(pools[name]), valid)
    elif kind == "array":
        item = value_strategy(spec, schema.get("items", {}), pools, name)
        valid = st.one_of(st.lists(item, max_size=8), st.lists(st.integers(-2, 60),
                                                               min_size=150, max_size=400))
    elif kind == "object" or "properties" in schema:
        return object_strategy(spec, schema, pools)
    else:
        valid = JSON_VALUES
    return st.one_of(valid, valid, valid, wrong)  # mostly plausible, sometimes wrong


def object_strategy(spec: dict[str, Any], schema: dict[str, Any],
                    pools: dict[str, list[Any]]) -> st.SearchStrategy[Any]:
    """Objects with the schema's properties (some dropped, sometimes an extra key)."""
    schema = _resolve(spec, schema)
    props = schema.get("properties", {})
    fields = {k: value_strategy(spec, v, pools, k) for k, v in props.items()}
    required = set(schema.get("required", []))

    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, strat in fields.items():
            keep = draw(st.integers(0, 9))
            if keep > 0 or (k in required and keep > 0):
                out[k] = draw(strat)
        if draw(st.integers(0, 9)) == 0:
            out[draw(st.text(min_size=1, max_size=10))] = draw(JSON_SCALARS)
        return out

    return build()


def body_strategy(spec: dict[str, Any], op: dict[str, Any],
                  pools: dict[str, list[Any]]) -> st.SearchStrategy[tuple[str, Any]]:
    """("json", value) or ("raw", bytes) request bodies of an operation."""
    content = op.get("requestBody", {}).get("content", {}).get("application/json")
    shaped = (value_strategy(spec, content["schema"], pools) if content
              else st.just(None))
    mutated = shaped
    if content:
        schema = _resolve(spec, content["schema"])
        if "anyOf" in schema:  # optional body: the object alternative
            schema = next((_resolve(spec, s) for s in schema["anyOf"]
                           if _resolve(spec, s).get("properties")), schema)
        examples = schema.get("examples") or []
        if examples:
            mutated = _mutations(spec, schema, examples, pools)
    return st.one_of(
        st.tuples(st.just("json"), mutated), st.tuples(st.just("json"), mutated),
        st.tuples(st.just("json"), shaped), st.tuples(st.just("json"), shaped),
        st.tuples(st.just("json"), JSON_VALUES),
        st.tuples(st.just("raw"), RAW_BODIES), st.tuples(st.just("raw"), RAW_BODIES))


def _mutations(spec: dict[str, Any], schema: dict[str, Any], examples: list[Any],
               pools: dict[str, list[Any]]) -> st.SearchStrategy[Any]:
    """A documented example with at most one field replaced (or dropped): reaches past
    validation into the handlers far more often than fully random objects."""
    props = schema.get("properties", {})
    fields = {k: value_strategy(spec, v, pools, k) for k, v in props.items()}

    @st.composite
    def build(draw: st.DrawFn) -> Any:
        body = dict(draw(st.sampled_from(examples)))
        for k in fields:  # real event ids make feedback reach the decision lookup
            if k in pools and pools[k] and k in body:
                body[k] = draw(st.sampled_from(pools[k]))
        choice = draw(st.integers(0, len(fields) + 1))
        names = sorted(fields)
        if choice < len(names):
            body[names[choice]] = draw(fields[names[choice]])
        elif choice == len(names) and body:
            body.pop(draw(st.sampled_from(sorted(body))))
        return body

    return build()


@dataclass
class FuzzReport:
    """Counts of one fuzzing run."""

    cases: Counter[str] = field(default_factory=Counter)
    statuses: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    raw_cases: Counter[str] = field(default_factory=Counter)
    """Cases with a raw-byte body, by endpoint."""
    raw_not_utf8: Counter[str] = field(default_factory=Counter)
    """... of which the body is not valid UTF-8."""
    raw_content_types: Counter[str] = field(default_factory=Counter)
    """Raw-byte cases by content type (``none`` = no header)."""

    def summary(self) -> dict[str, Any]:
        return {"cases_tried": sum(self.cases.values()), "cases_by_endpoint":
                dict(self.cases), "failures": len(self.failures),
                "answers_5xx": sum(n for k, n in self.statuses.items()
                                   if k.rsplit(" ", 1)[-1].startswith("5")),
                "statuses": dict(self.statuses), "raw_cases": dict(self.raw_cases),
                "raw_not_utf8": dict(self.raw_not_utf8),
                "raw_content_types": dict(self.raw_content_types.most_common(15)),
                "first_failures": self.failures[:5]}


PARSER_400 = "Invalid HTTP request received."
"""uvicorn's own answer to bytes that are not HTTP (e.g. control octets in a header
value): the request never reaches the application."""


def check_answer(resp: httpx.Response) -> str | None:
    """Why an answer breaks the contract, or ``None``."""
    if resp.status_code >= 500:
        return f"server error {resp.status_code}: {resp.text[:200]}"
    if resp.status_code == 400 and resp.text == PARSER_400:
        return None
    if resp.status_code >= 400:
        try:
            body = resp.json()
        except ValueError:
            return f"{resp.status_code} without a JSON body: {resp.text[:200]}"
        detail = body.get("detail") if isinstance(body, dict) else None
        if not detail:
            return f"{resp.status_code} without a detail: {resp.text[:200]}"
        if resp.status_code == 422:
            for err in detail:
                if not err.get("loc") or not err.get("msg"):
                    return f"422 detail without loc/msg: {err}"
    return None


def fuzz(base_url: str, spec: dict[str, Any], *, examples_per_operation: int,
         pools: dict[str, list[Any]], seed: int = 0,
         api_key: str | None = None) -> FuzzReport:
    """Fuzz every operation of ``spec`` against a running service. With ``api_key`` (the
    service's key) most cases carry it, so keyed routes are fuzzed past the key check."""
    report = FuzzReport()
    with httpx.Client(base_url=base_url, timeout=30) as http:
        for path, ops in sorted(spec["paths"].items()):
            for method, op in sorted(ops.items()):
                _fuzz_operation(http, report, spec, path, method, op, pools,
                                examples_per_operation, api_key)
        _ = seed  # derandomized: the same cases every run
    return report


def _fuzz_operation(http: httpx.Client, report: FuzzReport, spec: dict[str, Any],
                    path: str, method: str, op: dict[str, Any],
                    pools: dict[str, list[Any]], examples: int,
                    real_key: str | None = None) -> None:
    key = f"{method.upper()} {path}"
    keys = st.one_of(st.none(), st.text(
        alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=20))
    if real_key:
        keys = st.one_of(st.just(real_key), st.just(real_key), st.just(real_key), keys)

    @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(body=body_strategy(spec, op, pools),
           query=st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=2),
           api_key=keys, ctype=CONTENT_TYPES)
    def one(body: tuple[str, Any], query: dict[str, str], api_key: str | None,
            ctype: bytes | None) -> None:
        kind, value = body
        headers: dict[str, Any] = {"X-API-Key": api_key} if api_key else {}
        if kind == "raw":
            if ctype is not None:
                headers["content-type"] = ctype
            try:
                resp = http.request(method, path, content=value, params=query,
                                    headers=headers)
            except httpx.LocalProtocolError:  # the client itself refuses to send it
                return
            report.raw_cases[key] += 1
            report.raw_content_types[ctype.decode("latin-1") if ctype is not None
                                     else "none"] += 1
            try:
                value.decode("utf-8")
            except UnicodeDecodeError:
                report.raw_not_utf8[key] += 1
        elif method in ("get", "head"):
            resp = http.request(method, path, params=query, headers=headers)
        else:  # NaN/Infinity tokens included: Python clients send them
            headers["content-type"] = "application/json"
            resp = http.request(method, path, content=json.dumps(value).encode(),
                                params=query, headers=headers)
        report.cases[key] += 1
        parser = resp.status_code == 400 and resp.text == PARSER_400
        report.statuses[f"{key} {'400-http-parser' if parser else resp.status_code}"] += 1
        why = check_answer(resp)
        if why:
            report.failures.append(f"{key} {kind} {value!r:.200}: {why}")

    one()
