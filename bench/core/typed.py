"""Checked conversion between plain dicts (YAML/JSON/CLI) and typed dataclasses.

Every config in lpc-bench is a dataclass; this module builds one from a mapping,
rejecting unknown keys and values of the wrong type with a message that names the full
dotted key, and applies ``a.b.c=value`` overrides the same way.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Mapping

import yaml

from bench.core.errors import BenchError

_NONE = type(None)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def convert(value: Any, tp: Any, where: str) -> Any:
    """Convert ``value`` to type ``tp`` (a dataclass, list[...], dict[...], scalar or union)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and _NONE in options:
            return None
        errors = []
        for option in options:
            if option is _NONE:
                continue
            try:
                return convert(value, option, where)
            except BenchError as exc:
                errors.append(str(exc))
        raise BenchError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    if origin is typing.Literal:
        if value not in typing.get_args(tp):
            raise BenchError(f"{where}: expected one of {list(typing.get_args(tp))}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise BenchError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(tp, value, where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise BenchError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(tp) or (Any, ...)
        if origin is tuple and args[-1] is not Ellipsis:  # fixed length: tuple[float, float]
            if len(value) != len(args):
                raise BenchError(f"{where}: expected a list of {len(args)} values, got {value!r}")
            return tuple(convert(v, t, f"{where}[{i}]") for i, (v, t) in enumerate(zip(value, args)))
        items = [convert(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, Mapping):
            raise BenchError(f"{where}: expected a mapping, got {value!r}")
        key_tp, val_tp = typing.get_args(tp) or (Any, Any)
        return {convert(k, key_tp, f"{where}.{k}"): convert(v, val_tp, f"{where}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise BenchError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise BenchError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML reads "1e-3" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise BenchError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise BenchError(f"{where}: expected a string, got {value!r}")
    raise BenchError(f"{where}: unsupported type {_type_name(tp)}")


def from_dict(cls: type, data: Mapping[str, Any], where: str = "") -> Any:
    """Build dataclass ``cls`` from ``data``; unknown keys and wrong types are errors."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        prefix = f"{where}." if where else ""
        raise BenchError(f"unknown key {prefix}{unknown[0]} (known: {', '.join(fields)})")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = convert(value, hints[name], f"{where}.{name}" if where else name)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        text = str(exc)  # "recipe.epochs must be > 0" already names its dotted key
        raise BenchError(text if where and text.startswith(f"{where}.") else f"{where or cls.__name__}: {text}") from None


def to_dict(obj: Any) -> Any:
    """A dataclass tree as plain JSON-able containers."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def parse_override(text: str) -> tuple[str, Any]:
    """``'recipe.epochs=20'`` → ``('recipe.epochs', 20)``; the value is read as YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise BenchError(f"override {text!r} is not of the form key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def _set_mapping_key(node: dict, parts: list[str], value: Any, key: str) -> None:
    """``node[parts[0]][parts[1]]… = value`` inside mapping-typed fields (checked later by type)."""
    for depth, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None and depth > 0:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise BenchError(f"override key {key!r}: {'.'.join(parts[:depth + 1])!r} has no sub-keys")
        node = child
    node[parts[-1]] = value


def apply_overrides(obj: Any, overrides: list[str]) -> Any:
    """Return a copy of dataclass ``obj`` with dotted ``key=value`` overrides applied."""
    data = to_dict(obj)
    for text in overrides:
        key, value = parse_override(text)
        parts = key.split(".")
        node, cls = data, type(obj)
        for depth, part in enumerate(parts):
            known = {f.name for f in dataclasses.fields(cls)}
            if part not in known:
                raise BenchError(f"unknown override key {'.'.join(parts[:depth + 1])!r} "
                                 f"(known at this level: {', '.join(sorted(known))})")
            if depth == len(parts) - 1:
                node[part] = value
            else:
                sub_tp = typing.get_type_hints(cls)[part]
                if typing.get_origin(sub_tp) is dict:  # latent_widths.wide=64: a key of a mapping
                    _set_mapping_key(node, parts[depth:], value, key)
                    break
                if not dataclasses.is_dataclass(sub_tp):
                    raise BenchError(f"override key {key!r}: {part!r} has no sub-keys")
                node, cls = node[part], sub_tp
    return from_dict(type(obj), data)
