#!/usr/bin/python3
"""Writes the golden bytes of avro/generic_test.go's TestAppendMatchesPythonAvro.

The binary encoding is done by the Apache Avro reference implementation, python3-avro
(Debian's /usr/bin/python3 has it: apt-get install python3-avro), so the test checks the Go
encoder against code we did not write. This script only maps each JSON input to Python values
by the rules in avro/generic.go's package doc, for the types order.avsc uses.

Rerun it after changing order.avsc or an order-*.json (from any directory):
    /usr/bin/python3 avro/testdata/custom/gen.py
It writes order-X.hex for every order-X.json next to it. Review the diff before committing.
"""
import datetime
import decimal
import glob
import io
import json
import os
import re
import warnings

import avro.io
import avro.schema

warnings.simplefilter("ignore")  # python3-avro warns when a timestamp or date is given as a number

HERE = os.path.dirname(os.path.abspath(__file__))
NUMBER = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?")


class Num(str):
    """A JSON number kept as its literal text, as Go's json.Number."""


def is_text(v):
    return type(v) is str


def integer(v):
    if isinstance(v, Num):
        d = decimal.Decimal(v)
        if d != d.to_integral_value():
            raise ValueError(f"not an integer: {v}")
        return int(d)
    if is_text(v) and re.fullmatch(r"[+-]?[0-9]+", v):
        return int(v)
    raise ValueError(f"not an integer: {v!r}")


def number_text(v):
    if isinstance(v, Num) or is_text(v) and NUMBER.fullmatch(v):
        return str(v)
    raise ValueError(f"not a number: {v!r}")


def exact_decimal(s, v):
    d = decimal.Decimal(number_text(v))
    scale, precision = s.get_prop("scale") or 0, s.get_prop("precision")
    q = d.quantize(decimal.Decimal(1).scaleb(-scale))
    if q != d or len(q.as_tuple().digits) > precision and q != 0:
        raise ValueError(f"{v} does not fit decimal({precision},{scale})")
    return q  # python3-avro needs exactly `scale` fraction digits


# python3-avro takes only datetime, date and time objects for the time logical types.
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


def timestamp(v, unit):
    if is_text(v) and not NUMBER.fullmatch(v):
        return datetime.datetime.fromisoformat(v).astimezone(datetime.timezone.utc)
    return EPOCH + datetime.timedelta(**{unit: integer(v)})  # MapOptions.NumericTimeUnit 0


def convert(s, v):
    t, lt = s.type, s.get_prop("logicalType")
    if t == "union":
        if v is None:
            if any(b.type == "null" for b in s.schemas):
                return None
            raise ValueError("null")
        for b in s.schemas:
            if b.type != "null":
                try:
                    return convert(b, v)
                except (ValueError, TypeError):
                    pass
        raise ValueError(f"no branch takes {v!r}")
    if t == "null" and v is None:
        return None
    if t == "boolean" and isinstance(v, bool):
        return v
    if t == "record" and isinstance(v, dict):
        out = {}
        for f in s.fields:
            key = next((k for k in [f.name] + list(f.get_prop("aliases") or []) if k in v), None)
            if key is not None:
                out[f.name] = convert(f.type, v[key])
            elif f.has_default:
                out[f.name] = from_default(f.type, f.default)
            else:
                raise ValueError(f"missing {f.name}")
        return out
    if t in ("int", "long") and not isinstance(v, (bool, dict, list)) and v is not None:
        if lt == "date" and is_text(v) and not NUMBER.fullmatch(v):
            return datetime.date.fromisoformat(v)
        if lt == "date":
            return EPOCH.date() + datetime.timedelta(days=integer(v))
        if lt == "time-millis" and is_text(v) and ":" in v:
            return datetime.time.fromisoformat(v)
        if lt == "time-millis":
            return (EPOCH + datetime.timedelta(milliseconds=integer(v))).time()
        if lt in ("timestamp-millis", "timestamp-micros"):
            return timestamp(v, lt.replace("timestamp-", "") + "econds")
        return integer(v)
    if t in ("float", "double") and isinstance(v, str):
        return float(number_text(v))
    if t == "string" and isinstance(v, str):  # a JSON number (Num) too, as its text
        if lt == "uuid" and not re.fullmatch(r"[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}", v):
            raise ValueError(f"not a uuid: {v}")
        return str(v)
    if t in ("bytes", "fixed") and lt == "decimal" and isinstance(v, str):
        return exact_decimal(s, v)
    if t == "bytes" and is_text(v):
        return v.encode("utf-8")
    if t == "fixed" and is_text(v) and len(v.encode("utf-8")) == s.size:
        return v.encode("utf-8")
    if t == "enum" and is_text(v) and v in s.symbols:
        return v
    if t == "array" and isinstance(v, list):
        return [convert(s.items, x) for x in v]
    if t == "map" and isinstance(v, dict):
        return {k: convert(s.values, v[k]) for k in sorted(v)}  # the Go encoder sorts keys
    raise ValueError(f"{v!r} does not fit {t}")


def from_default(s, d):
    """A schema default, read as the Avro specification says."""
    t = s.type
    if t == "union":
        return from_default(s.schemas[0], d)
    if t in ("bytes", "fixed"):
        return d.encode("latin-1")  # code points 0-255
    if t == "record":
        return {f.name: from_default(f.type, d[f.name] if f.name in d else f.default) for f in s.fields}
    if t == "array":
        return [from_default(s.items, x) for x in d]
    if t == "map":
        return {k: from_default(s.values, d[k]) for k in sorted(d)}
    if t in ("float", "double"):
        return float(d)
    return d


def main():
    with open(os.path.join(HERE, "order.avsc"), encoding="utf-8") as f:
        schema = avro.schema.parse(f.read())
    for path in sorted(glob.glob(os.path.join(HERE, "order-*.json"))):
        with open(path, encoding="utf-8") as f:
            record = json.load(f, parse_int=Num, parse_float=Num)
        out = io.BytesIO()
        avro.io.DatumWriter(schema).write(convert(schema, record), avro.io.BinaryEncoder(out))
        with open(path[: -len(".json")] + ".hex", "w", encoding="ascii") as f:
            f.write(out.getvalue().hex() + "\n")
        print(os.path.basename(path), len(out.getvalue()), "bytes")


if __name__ == "__main__":
    main()
