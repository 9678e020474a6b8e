"""Load params: params/defaults.yaml < site files < notebook sections < ``--set key.path=value``.

Mappings merge key by key; lists and scalars replace what is below them. Every key remembers
the layer (file and line) it came from, so an error names the file, the key path, the value
and what was expected. Relative paths are resolved against the directory of the file that set
them (``--set`` and notebook values: the current directory).
"""

from __future__ import annotations

import difflib
import hashlib
import os
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from . import secrets
from .schema import MAY_HOLD_SECRETS, PATH, SECRET, KeyProblem, Params, unwrap

PROJECT_ROOT = Path(__file__).resolve().parents[3]
DEFAULTS_FILE = PROJECT_ROOT / "params" / "defaults.yaml"
LAB_FILE = PROJECT_ROOT / "params" / "lab.yaml"

Loc = tuple[str | int, ...]


class ParamsError(Exception):
    """Params that cannot be used; ``str()`` is a message for people, one problem a line."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid params:\n" + "\n".join(f"  - {p}" for p in problems))


@dataclass
class Layer:
    """One source of values: a file, the notebook's parameters or the --set list."""

    source: str
    base_dir: Path
    lines: dict[Loc, int] = field(default_factory=dict)

    def where(self, loc: Loc) -> str:
        line = _longest_prefix(self.lines, loc)
        return f"{self.source}:{line}" if line is not None else self.source


@dataclass
class LoadedParams:
    """Validated params and where they came from."""

    params: Params
    files: list[dict[str, str]]  # [{"path": ..., "sha256": ...}] in layering order
    set_values: list[str]
    #: ``where("kubespray.kube_pods_subnet")`` -> the file:line (or --set) that set a key path
    where: typing.Callable[[str], str] | None = field(default=None, repr=False, compare=False)


def key_loc(key: str) -> Loc:
    """A dotted key path (``cluster.nodes[0].ip``, ``cluster.nodes[*].roles``) as a Loc; ``[*]`` stops it."""
    loc: list[str | int] = []
    for part in key.split("."):
        name, _, rest = part.partition("[")
        loc.append(name)
        if rest:
            index = rest.split("]", 1)[0]
            if not index.isdigit():
                break
            loc.append(int(index))
    return tuple(loc)


# --- YAML with line numbers ---------------------------------------------------------------

def _lines(node: yaml.Node, loc: Loc, out: dict[Loc, int], source: str) -> None:
    out[loc] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        seen: set[Any] = set()
        for key_node, value_node in node.value:
            key = key_node.value
            if key in seen:
                raise ParamsError([f"{source}:{key_node.start_mark.line + 1}: {_dotted(loc + (key,))}: "
                                   "duplicate key (the later one would silently win)"])
            seen.add(key)
            _lines(value_node, loc + (key,), out, source)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _lines(item, loc + (i,), out, source)


MAX_DEPTH = 64          # nesting of mappings/sequences in one document
MAX_NODES = 100_000     # nodes of a document with every alias expanded (an alias bomb has billions)


class YamlBoundError(ValueError):
    """A YAML text beyond the nesting or alias-expansion bounds."""


def _flow_depth(text: str) -> tuple[int, int]:
    """(deepest ``[``/``{`` nesting, its line) by a plain scan, quotes and comments skipped.

    PyYAML's scanner slows down badly on deep flow nesting, so this linear pass runs first.
    """
    depth = deepest = line = where = 0
    quote = ""
    comment = False
    prev = "\n"
    for ch in text:
        if ch == "\n":
            line += 1
            comment = False
        elif comment:
            pass
        elif quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"" and prev in " \t\n[{,:":
            quote = ch
        elif ch == "#" and prev in " \t\n":
            comment = True
        elif ch in "[{":
            depth += 1
            if depth > deepest:
                deepest, where = depth, line
        elif ch in "]}":
            depth = max(0, depth - 1)
        prev = ch
    return deepest, where + 1


def _check_depth(text: str, source: str) -> None:
    """Reject nesting deeper than MAX_DEPTH from the event stream (no recursion, so no RecursionError)."""
    flow, line = _flow_depth(text)
    if flow > MAX_DEPTH:
        raise YamlBoundError(f"{source}:{line}: nested deeper than {MAX_DEPTH} levels "
                             "(params are a few levels deep; is this the right file?)")
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_DEPTH:
                line = event.start_mark.line + 1 if event.start_mark else "?"
                raise YamlBoundError(f"{source}:{line}: nested deeper than {MAX_DEPTH} levels "
                                     "(params are a few levels deep; is this the right file?)")
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1


def _check_expansion(node: yaml.Node | None, source: str) -> None:
    """Reject documents whose aliases expand to more than MAX_NODES nodes (linear: sizes are memoised)."""
    sizes: dict[int, int] = {}

    def size(n: yaml.Node) -> int:
        key = id(n)
        if key in sizes:
            return sizes[key]
        sizes[key] = 1  # a recursive alias counts once
        if isinstance(n, yaml.MappingNode):
            total = 1 + sum(size(k) + size(v) for k, v in n.value)
        elif isinstance(n, yaml.SequenceNode):
            total = 1 + sum(size(v) for v in n.value)
        else:
            total = 1
        sizes[key] = min(total, MAX_NODES + 1)
        return sizes[key]

    if node is not None and size(node) > MAX_NODES:
        raise YamlBoundError(f"{source}: aliases expand to more than {MAX_NODES} values (a YAML alias bomb?); "
                             "write the values out or use fewer nested aliases")


def compose_bounded(text: str, source: str) -> yaml.Node | None:
    """yaml.compose with the depth and alias-expansion bounds checked first."""
    _check_depth(text, source)
    node = yaml.compose(text, Loader=yaml.SafeLoader)
    _check_expansion(node, source)
    return node


def safe_load_all_bounded(text: str, source: str) -> list[Any]:
    """yaml.safe_load_all of a text within the bounds (policy files, manifests named by params)."""
    _check_depth(text, source)
    for node in yaml.compose_all(text, Loader=yaml.SafeLoader):
        _check_expansion(node, source)
    return list(yaml.safe_load_all(text))


def read_yaml(path: Path) -> tuple[dict[str, Any], Layer, str]:
    """Read one params file: (data, layer, sha256 of its bytes)."""
    source = _display(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ParamsError([f"{source}: cannot read params file: {exc.strerror}"]) from None
    text = raw.decode("utf-8", errors="replace")
    layer = Layer(source, path.parent.resolve())
    try:
        node = compose_bounded(text, source)
        data = yaml.safe_load(text)
    except YamlBoundError as exc:
        raise ParamsError([str(exc)]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        raise ParamsError([f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}"]) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ParamsError([f"{source}: expected a mapping of sections (site, cluster, kubespray, ...), "
                           f"got {type(data).__name__}"])
    if node is not None:
        _lines(node, (), layer.lines, source)
    return data, layer, hashlib.sha256(raw).hexdigest()


# --- layering -------------------------------------------------------------------------------

def merge(base: dict[str, Any], top: dict[str, Any], layer_no: int, origin: dict[Loc, int], loc: Loc = ()) -> None:
    """Merge ``top`` into ``base`` in place, recording the layer of every leaf in ``origin``."""
    for key, value in top.items():
        here = loc + (key,)
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merge(base[key], value, layer_no, origin, here)
        else:
            base[key] = _copy(value)
            for stale in [k for k in origin if k[: len(here)] == here]:
                del origin[stale]
            _mark(value, layer_no, origin, here)


def _mark(value: Any, layer_no: int, origin: dict[Loc, int], loc: Loc) -> None:
    origin[loc] = layer_no
    if isinstance(value, dict):
        for key, item in value.items():
            _mark(item, layer_no, origin, loc + (key,))


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


_SEGMENT = re.compile(r"^([A-Za-z0-9_][A-Za-z0-9_-]*)((?:\[\d+\])*)$")  # 02_cni_install is a key


def parse_set(expr: str) -> tuple[Loc, Any]:
    """Parse ``key.path=value`` (``cluster.nodes[0].ip=10.0.0.5``); the value is read as YAML."""
    if "=" not in expr:
        raise ParamsError([f"--set {expr}: expected key.path=value"])
    path, _, text = expr.partition("=")  # messages name the path only: the value may be secret
    loc: list[str | int] = []
    for part in path.strip().split("."):
        m = _SEGMENT.match(part)
        if not m:
            raise ParamsError([f"--set {path}: {part!r} is not a key (letters, digits, _ and -, optional [index])"])
        loc.append(m.group(1))
        loc.extend(int(i) for i in re.findall(r"\[(\d+)\]", m.group(2)))
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        value = text
    return tuple(loc), value


def apply_set(data: dict[str, Any], loc: Loc, value: Any) -> None:
    """Set one value deep inside the merged data, creating mappings on the way."""
    expr = _dotted(loc)
    node: Any = data
    for i, key in enumerate(loc[:-1]):
        nxt = loc[i + 1]
        if isinstance(key, int):
            if not isinstance(node, list) or key >= len(node):
                raise ParamsError([f"--set {expr}: {_dotted(loc[: i + 1])}: no such list item"])
            node = node[key]
            continue
        if not isinstance(node, dict):
            raise ParamsError([f"--set {expr}: {_dotted(loc[:i])} is not a mapping"])
        if key not in node or node[key] is None:
            node[key] = [] if isinstance(nxt, int) else {}
        node = node[key]
    last = loc[-1]
    if isinstance(last, int):
        if not isinstance(node, list) or last >= len(node):
            raise ParamsError([f"--set {expr}: {_dotted(loc)}: no such list item"])
    elif not isinstance(node, dict):
        raise ParamsError([f"--set {expr}: {_dotted(loc[:-1])} is not a mapping"])
    node[last] = value


# --- schema walking -------------------------------------------------------------------------

def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _type_at(loc: Loc) -> tuple[Any, list[Any]]:
    """The schema type (and its markers) of the value at ``loc``; (None, []) if unknown."""
    tp: Any = Params
    meta: list[Any] = []
    for key in loc:
        if _is_model(tp) and isinstance(key, str) and key in tp.model_fields:
            info = tp.model_fields[key]
            tp, meta = unwrap(info.annotation)
            meta = list(info.metadata) + meta
        elif typing.get_origin(tp) is list and isinstance(key, int):
            tp, meta = unwrap(typing.get_args(tp)[0])
        elif typing.get_origin(tp) is dict and isinstance(key, str):
            tp, meta = unwrap(typing.get_args(tp)[1])
        else:
            return None, []
    return tp, meta


def _resolve_paths(value: Any, loc: Loc, layer_of: typing.Callable[[Loc], Layer]) -> Any:
    """Make relative paths absolute, relative to the directory of the layer that set them."""
    tp, meta = _type_at(loc)
    if isinstance(value, str) and PATH in meta:
        if SECRET in meta and not secrets.is_reference(value):
            return value  # an inline secret: left for the schema to reject
        path = secrets.reference_path(value) if SECRET in meta else value
        if not path:
            return value  # env:VAR
        expanded = Path(path).expanduser()
        if not expanded.is_absolute():
            expanded = layer_of(loc).base_dir / expanded
        return secrets.with_path(value, os.path.normpath(expanded))
    if isinstance(value, dict) and (_is_model(tp) or typing.get_origin(tp) is dict):
        return {k: _resolve_paths(v, loc + (k,), layer_of) for k, v in value.items()}
    if isinstance(value, list) and typing.get_origin(tp) is list:
        return [_resolve_paths(v, loc + (i,), layer_of) for i, v in enumerate(value)]
    return value


# --- errors ---------------------------------------------------------------------------------

def _dotted(loc: Loc) -> str:
    out = ""
    for key in loc:
        out += f"[{key}]" if isinstance(key, int) else (f".{key}" if out else str(key))
    return out or "(top level)"


def _longest_prefix(mapping: dict[Loc, Any], loc: Loc) -> Any:
    for n in range(len(loc), -1, -1):
        if loc[:n] in mapping:
            return mapping[loc[:n]]
    return None


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _problem(err: dict[str, Any], layer_of: typing.Callable[[Loc], Layer]) -> str:
    loc: Loc = tuple(err["loc"])
    cause = (err.get("ctx") or {}).get("error")
    if isinstance(cause, KeyProblem):  # a cross-field check names its key: no section dump
        loc = loc + key_loc(cause.key)
        return f"{layer_of(loc).where(loc)}: {cause.key if not err['loc'] else _dotted(tuple(err['loc'])) + '.' + cause.key}: {cause}"
    where = layer_of(loc).where(loc)
    if err["type"] == "extra_forbidden":
        parent, _ = _type_at(loc[:-1])
        known = list(parent.model_fields) if _is_model(parent) else []
        close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(known)}"
        return f"{where}: {_dotted(loc)}: unknown key; {hint}"
    if err["type"] == "missing":
        return f"{where}: {_dotted(loc)}: required key is missing"
    msg = err["msg"].removeprefix("Value error, ")
    msg = msg[0].lower() + msg[1:] if msg else msg
    _, meta = _type_at(loc)
    shown = "<hidden>" if SECRET in meta or MAY_HOLD_SECRETS in meta else _short(err.get("input"))
    return f"{where}: {_dotted(loc)} = {shown}: {msg}"


# --- entry point ----------------------------------------------------------------------------

def load_params(
    files: typing.Iterable[str | os.PathLike[str]] = (),
    set_values: typing.Iterable[str] = (),
    inline: dict[str, Any] | None = None,
    defaults: str | os.PathLike[str] | None = DEFAULTS_FILE,
    static_checks: bool = True,
) -> LoadedParams:
    """Layer, validate and return the params. Raises :class:`ParamsError` for any user error.

    ``inline`` holds top-level sections given directly (a notebook's parameters when it is run
    with ``papermill -f site.yaml``); ``None`` values in it are ignored. ``static_checks`` runs
    :mod:`.checks` (files named by params exist and parse, names exist, CNI settings fit).
    """
    data: dict[str, Any] = {}
    origin: dict[Loc, int] = {}
    layers: list[Layer] = []
    hashes: list[dict[str, str]] = []
    paths = ([Path(defaults)] if defaults is not None else []) + [Path(f) for f in files]
    for path in paths:
        layer_data, layer, digest = read_yaml(path)
        layers.append(layer)
        hashes.append({"path": str(path.resolve()), "sha256": digest})
        merge(data, layer_data, len(layers) - 1, origin)
    inline = {k: v for k, v in (inline or {}).items() if v is not None}
    if inline:
        layers.append(Layer("notebook parameters", Path.cwd()))
        merge(data, inline, len(layers) - 1, origin)
    set_values = list(set_values)
    for expr in set_values:
        loc, value = parse_set(expr)
        layers.append(Layer(f"--set {_dotted(loc)}", Path.cwd()))  # the value is not shown: it may be secret
        apply_set(data, loc, value)
        for stale in [k for k in origin if k[: len(loc)] == loc]:
            del origin[stale]
        _mark(value, len(layers) - 1, origin, loc)
    if not layers:
        layers.append(Layer("built-in defaults", Path.cwd()))

    def layer_of(loc: Loc) -> Layer:
        # The newest layer that set this key or anything below it, else the one that set a parent.
        below = [n for k, n in origin.items() if k[: len(loc)] == loc]
        n = max(below) if below else _longest_prefix(origin, loc)
        return layers[n if n is not None else -1]

    data = _resolve_paths(data, (), layer_of)
    try:
        params = Params.model_validate(data)
    except ValidationError as exc:
        raise ParamsError([_problem(e, layer_of) for e in exc.errors()]) from None
    if static_checks:
        from .checks import check

        found = check(params, lambda loc: layer_of(tuple(loc)).where(tuple(loc)))
        if found:
            raise ParamsError(found)
    return LoadedParams(params=params, files=hashes, set_values=set_values,
                        where=lambda key: layer_of(key_loc(key)).where(key_loc(key)))
