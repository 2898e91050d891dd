"""Load a YAML graph file into a `Graph`: validation with file, line and column;
`${arg}` substitution; `include:`; `vehicles:` templating; `--set` overrides."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import yaml

from fleetbus.launch.graph import (
    HEALTH_MONITOR,
    LATENCY_MONITOR,
    Graph,
    GraphFile,
    LatencyBudget,
    NodeSpec,
    Vehicle,
)

_ARG = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_.]*)\}")
_PATH_PART = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]")
T = TypeVar("T")
Where = tuple[str, int, int]  # file, line, column
MAX_DEPTH = 100
"""How deep a graph file may nest: the loader walks its values recursively."""
MAX_VALUES = 1_000_000
"""How many values a graph file may hold with its YAML aliases expanded: a few hundred bytes
of aliases of aliases (a "billion laughs") expand to billions, which the loader would copy."""
YAML_FAULTS = (yaml.YAMLError, ValueError, LookupError, AttributeError, RecursionError)
"""What PyYAML's safe loading raises on bad text. Beyond YAMLError, its constructors fail on
some explicitly tagged scalars with bare builtin errors (`!!float ""` IndexError, `!!bool x`
KeyError, `!!timestamp x` AttributeError; a date 2020-13-45, `!!int x` or an integer of
5000 digits ValueError), and nesting deeper than its parser recurses is a RecursionError."""


@dataclass(frozen=True)
class Problem:
    file: str
    line: int  # 1-based; 0 when unknown
    column: int
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}" if self.line else self.file
        return f"{where}: {self.message}"


class GraphError(ValueError):
    """A graph file that cannot be launched; `problems` says where and why."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


class _Source:
    """A parsed YAML file that can point at the line of any value in it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            text = path.read_text()
        except OSError as exc:
            raise GraphError([Problem(str(path), 0, 0, f"cannot read: {exc.strerror}")]) from None
        except UnicodeDecodeError as exc:  # a binary file, or another encoding
            raise GraphError([Problem(str(path), 0, 0, f"not UTF-8 text: {exc.reason} at "
                                                       f"byte {exc.start}")]) from None
        try:
            self.tree = yaml.compose(text, Loader=yaml.SafeLoader)
            self.data = yaml.safe_load(text)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark
            line, col = (mark.line + 1, mark.column + 1) if mark else (0, 0)
            raise GraphError([Problem(str(path), line, col, f"invalid YAML: {exc.problem}")]
                             ) from None
        except YAML_FAULTS as exc:  # without a position
            raise GraphError([Problem(str(path), 0, 0, f"invalid YAML: {yaml_fault(exc)}")]
                             ) from None
        try:
            _check_size(self.data)
        except ValueError as exc:
            raise GraphError([Problem(str(path), 0, 0, f"invalid YAML: {exc}")]) from None
        if self.data is None:
            self.data = {}
        if not isinstance(self.data, dict):
            raise GraphError([self.problem([], "a graph file must be a mapping at the top")])

    def where(self, path: list[str | int]) -> tuple[str, int, int]:
        problem = self.problem(path, "")
        return problem.file, problem.line, problem.column

    def problem(self, path: list[str | int], message: str) -> Problem:
        node = self.tree
        for key in path:
            child = None
            if isinstance(node, yaml.MappingNode):
                child = next((v for k, v in node.value if k.value == key), None)
            elif isinstance(node, yaml.SequenceNode) and isinstance(key, int):
                child = node.value[key] if key < len(node.value) else None
            if child is None:
                break
            node = child
        if node is None:
            return Problem(str(self.path), 0, 0, message)
        return Problem(str(self.path), node.start_mark.line + 1, node.start_mark.column + 1,
                       message)


def yaml_fault(exc: BaseException) -> str:
    """What went wrong, for one of YAML_FAULTS."""
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    if isinstance(exc, yaml.YAMLError):
        return str(exc)
    return f"a value it cannot read ({type(exc).__name__}: {exc})"


def _check_size(data: Any) -> None:
    """ValueError if `data`, its aliases expanded, nests deeper than MAX_DEPTH or holds more
    than MAX_VALUES values, or if an alias contains itself (`&a [*a]`): the loader copies
    the tree, and would recurse without end or run out of memory. Shared parts (aliases)
    are measured once, so this costs one pass over the file's own values."""
    measured: dict[int, tuple[int, int]] = {}  # id -> (values, depth below)
    open_: set[int] = set()

    def measure(value: Any, depth: int) -> tuple[int, int]:
        if not isinstance(value, dict | list | set):
            return 1, 0
        if id(value) in open_:
            raise ValueError("a YAML alias contains itself")
        count, below = measured.get(id(value)) or (0, 0)
        if not count:
            if depth >= MAX_DEPTH:
                raise ValueError(f"nested deeper than {MAX_DEPTH} levels")
            open_.add(id(value))
            count = 1
            for child in [*value, *value.values()] if isinstance(value, dict) else value:
                child_count, child_below = measure(child, depth + 1)
                count, below = count + child_count, max(below, child_below + 1)
            open_.discard(id(value))
            measured[id(value)] = count, below
        if depth + below > MAX_DEPTH:
            raise ValueError(f"nested deeper than {MAX_DEPTH} levels")
        if count > MAX_VALUES:
            raise ValueError(f"more than {MAX_VALUES} values once its aliases are expanded")
        return count, below

    measure(data, 0)


def _error_path(exc: msgspec.ValidationError) -> list[str | int]:
    """`$.nodes[0].restart` at the end of a msgspec message → ["nodes", 0, "restart"]."""
    text = str(exc)
    if " - at `$" not in text:
        return []
    path = text.rsplit(" - at `$", 1)[1].rstrip("`")
    return [name if name else int(index) for name, index in _PATH_PART.findall(path)]


def _substitute(value: Any, args: dict[str, Any], path: list[str | int],
                missing: list[tuple[list[str | int], str]]) -> Any:
    """Replace `${name}` in strings; a string that is only `${name}` takes the arg's own
    type, so numbers stay numbers."""
    if isinstance(value, dict):
        return {k: _substitute(v, args, [*path, k], missing) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, args, [*path, i], missing) for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value
    whole = _ARG.fullmatch(value)
    if whole:
        name = whole.group(1)
        if name not in args:
            missing.append((path, name))
            return value
        return args[name]

    def replace(match: re.Match) -> str:
        if match.group(1) not in args:
            missing.append((path, match.group(1)))
            return match.group(0)
        return str(args[match.group(1)])

    return _ARG.sub(replace, value)


def _parse_sets(sets: list[str]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """`--set name=value` → args; `--set node.param=value` → parameter overrides."""
    args: dict[str, Any] = {}
    params: dict[str, dict[str, Any]] = {}
    for item in sets:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise GraphError([Problem("--set", 0, 0, f"expected key=value, got {item!r}")])
        try:
            value = yaml.safe_load(text) if text else ""
        except YAML_FAULTS as exc:
            raise GraphError([Problem("--set", 0, 0, f"{item!r}: invalid YAML value: "
                                                     f"{yaml_fault(exc)}")]) from None
        node, dot, param = key.rpartition(".")
        if dot:
            params.setdefault(node, {})[param] = value
        else:
            args[key] = value
    return args, params


def _expand(path: Path, args: dict[str, Any], namespace: str, seen: tuple[Path, ...],
            graph: Graph, budgets: list[tuple[LatencyBudget, Where]]) -> None:
    """Add the nodes of one file (and its includes) to `graph`, its latency budgets to
    `budgets`."""
    source = _Source(path)
    if path in seen:
        raise GraphError([Problem(str(path), 0, 0, "includes itself: "
                                  + " -> ".join(str(p) for p in (*seen, path)))])
    raw_args = source.data.get("args") or {}
    merged = {**raw_args, **args} if isinstance(raw_args, dict) else dict(args)
    # built in: the file's own folder, so a graph names its data files (geofences,
    # missions) relative to itself and runs from any working directory
    merged["dir"] = str(path.parent)
    missing: list[tuple[list[str | int], str]] = []
    # an argument's default may use the others, e.g. a data file under ${dir}
    merged = {k: _substitute(v, merged, ["args", k], missing) for k, v in merged.items()}
    raw_vehicles = _substitute(source.data.get("vehicles", []), merged, ["vehicles"], missing)
    if missing:
        raise _unknown_args(source, missing)
    try:  # first: the nodes may refer to the vehicles list as ${vehicles}
        vehicles = msgspec.convert(raw_vehicles, list[Vehicle])
    except msgspec.ValidationError as exc:
        raise GraphError([source.problem(["vehicles", *_error_path(exc)],
                                         str(exc).split(" - at ")[0])]) from None
    merged = {"vehicles": [v.simulated() for v in vehicles], **merged}
    data = _substitute({k: v for k, v in source.data.items()
                        if k not in ("vehicle_nodes", "vehicles", "latency_budgets")},
                       merged, [], missing)
    # checked here, as GraphFile checks the rest: the loop below iterates over it
    template = _converted(source, source.data.get("vehicle_nodes", []), list[Any],
                          ["vehicle_nodes"])
    if missing:
        raise _unknown_args(source, missing)
    rates = data.get("rates")
    for glob, hz in rates.items() if isinstance(rates, dict) else ():
        # here, not by GraphFile: msgspec's message would not say which contract is wrong
        if isinstance(hz, bool) or not isinstance(hz, int | float) or not hz > 0:
            raise GraphError([source.problem(["rates", glob], f"the rate contract of "
                                             f"{glob!r} must be a number of Hz > 0, not "
                                             f"{hz!r}")])
    try:
        spec = msgspec.convert({**data, "vehicles": raw_vehicles, "vehicle_nodes": [],
                                "latency_budgets": []}, GraphFile)
    except msgspec.ValidationError as exc:
        raise GraphError([source.problem(_error_path(exc), str(exc).split(" - at ")[0])]
                         ) from None
    graph.name = graph.name or spec.name
    graph.env = {**spec.env, **graph.env}
    for i_index, include in enumerate(spec.include):
        try:
            included = (path.parent / include.file).resolve()
        except (OSError, ValueError, RuntimeError) as exc:  # a NUL in it; a symlink loop
            raise GraphError([source.problem(["include", i_index, "file"],
                                             f"bad include path {include.file!r}: {exc}")]
                             ) from None
        _expand(included, include.args, _join(namespace, include.namespace), (*seen, path),
                graph, budgets)
    for index, node in enumerate(spec.nodes):
        _add(graph, _place(node, namespace), source.where(["nodes", index]))
    for glob, hz in spec.rates.items():
        graph.rates[glob if glob.startswith("/") else "/" + _join(namespace, glob)] = hz
    for v_index, vehicle in enumerate(spec.vehicles):
        missing = []
        nodes = _substitute(template, _vehicle_args(merged, vehicle), ["vehicle_nodes"], missing)
        if missing:
            raise GraphError([source.problem(p, f"unknown argument ${{{name}}}")
                              for p, name in missing])
        specs = []
        for t_index, raw in enumerate(nodes):
            try:
                specs.append(msgspec.convert(raw, NodeSpec))
            except msgspec.ValidationError as exc:
                where = ["vehicle_nodes", t_index, *_error_path(exc)]
                raise GraphError([source.problem(where, str(exc).split(" - at ")[0])]) from None
        # from the checked specs: a raw entry's name may be anything (a list: unhashable)
        unknown = set(vehicle.params) - {spec.name for spec in specs}
        if unknown:
            raise GraphError([source.problem(["vehicles", v_index, "params"],
                                             f"no template node named {sorted(unknown)}")])
        for t_index, node in enumerate(specs):
            overlay = vehicle.params.get(node.name, {})
            node = msgspec.structs.replace(
                node, namespace=_join(vehicle.id, node.namespace),
                params={**node.params, **overlay},
            )
            _add(graph, _place(node, namespace), source.where(["vehicle_nodes", t_index]))
    budgets.extend(_latency_budgets(source, merged, spec.vehicles, namespace))


def _vehicle_args(merged: dict[str, Any], vehicle: Vehicle) -> dict[str, Any]:
    """The `${...}` arguments of a per-vehicle template: the file's and the vehicle's."""
    return {**merged, "vehicle_id": vehicle.id, "vehicle_type": vehicle.type,
            "vehicle_start": vehicle.start, "vehicle_model": vehicle.model,
            **{f"start_{k}": val for k, val in vehicle.start.items()}}


def _converted(source: _Source, value: Any, cls: type[T], at: list[str | int]) -> T:
    """`value` as `cls`, or a GraphError pointing at the offending part under `at`."""
    try:
        return msgspec.convert(value, cls)
    except msgspec.ValidationError as exc:
        raise GraphError([source.problem([*at, *_error_path(exc)],
                                         str(exc).split(" - at ")[0])]) from None


def _latency_budgets(source: _Source, merged: dict[str, Any], vehicles: list[Vehicle],
                     namespace: str) -> list[tuple[LatencyBudget, Where]]:
    """The file's latency budgets, a per-vehicle one once per vehicle, each located
    where it was written."""
    entries = _converted(source, source.data.get("latency_budgets", []),
                         list[dict[str, Any]], ["latency_budgets"])
    found = []
    for index, entry in enumerate(entries):
        at: list[str | int] = ["latency_budgets", index]
        per_vehicle = entry.get("per_vehicle") is True
        if per_vehicle and not vehicles:
            raise GraphError([source.problem([*at, "per_vehicle"],
                                             "per_vehicle, but this file lists no vehicles")])
        for vehicle in vehicles if per_vehicle else [None]:
            missing: list[tuple[list[str | int], str]] = []
            args = merged if vehicle is None else _vehicle_args(merged, vehicle)
            value = _substitute(entry, args, at, missing)
            if missing:
                raise _unknown_args(source, missing)
            budget = _converted(source, value, LatencyBudget, at)
            found.append((_place_budget(budget, namespace, vehicle.id if vehicle else ""),
                          source.where(at)))
    return found


def _place_budget(budget: LatencyBudget, namespace: str, vehicle_id: str) -> LatencyBudget:
    """Relative topics resolved as a node's would be in the same place (the include's
    namespace, then the vehicle's), and the name made unique per place."""
    where = _join(namespace, vehicle_id)

    def topic(name: str) -> str:
        return name if name.startswith("/") else "/" + _join(where, name)

    return msgspec.structs.replace(budget, name=_join(namespace, budget.name, vehicle_id),
                                   source=topic(budget.source), sink=topic(budget.sink),
                                   per_vehicle=False)


def _add_latency_monitor(graph: Graph, budgets: list[tuple[LatencyBudget, Where]]) -> None:
    """One `latency` node measures every budget of the graph. It runs on the wall clock
    whatever the graph's FLEETBUS_CLOCK: latency is wall time, and its reports must go
    on while a lockstep simulation holds."""
    if not budgets:
        return
    names: set[str] = set()
    for budget, where in budgets:
        if budget.name in names:
            raise GraphError([Problem(*where, f"two latency budgets are named {budget.name}")])
        names.add(budget.name)
    params = {"budgets": [msgspec.to_builtins(budget) for budget, _ in budgets]}
    _add(graph, NodeSpec(name="latency", node_class=LATENCY_MONITOR, params=params,
                         env={"FLEETBUS_CLOCK": "wall"}), budgets[0][1])


def _add_rate_contracts(graph: Graph, where: Where) -> None:
    """The graph's rate contracts go to its health monitors (their own `rates` win), or
    to a `health` node added for them, on the wall clock like the rates it checks."""
    if not graph.rates:
        return
    monitors = [n for n in graph.nodes if n.node_class == HEALTH_MONITOR]
    for node in monitors:
        node.params = {**node.params, "rates": {**graph.rates, **node.params.get("rates", {})}}
    if not monitors:
        _add(graph, NodeSpec(name="health", node_class=HEALTH_MONITOR,
                             params={"rates": dict(graph.rates)},
                             env={"FLEETBUS_CLOCK": "wall"}), where)


def _unknown_args(source: _Source, missing: list[tuple[list[str | int], str]]) -> GraphError:
    return GraphError([source.problem(p, f"unknown argument ${{{name}}} (declare it under "
                                         "args: or pass --set)") for p, name in missing])


def _add(graph: Graph, node: NodeSpec, where: tuple[str, int, int]) -> None:
    graph.nodes.append(node)
    graph.origins.append(where)


def _join(*parts: str) -> str:
    return "/".join(p.strip("/") for p in parts if p.strip("/"))


def _place(node: NodeSpec, namespace: str) -> NodeSpec:
    """Put a node under an include's namespace, keeping its dependencies' names
    relative to the same namespace."""
    if not namespace or node.name.startswith("/"):
        return node
    return msgspec.structs.replace(node, namespace=_join(namespace, node.namespace))


def at(graph: Graph, index: int, message: str) -> Problem:
    """A problem located where the graph's `index`-th node was written."""
    return Problem(*graph.origins[index], message)


def _resolve_dependencies(graph: Graph, problems: list[Problem], file: str) -> None:
    """depends_on names become full names: a sibling in the same namespace first."""
    by_full = {n.full_name: n for n in graph.nodes}
    for i, node in enumerate(graph.nodes):
        resolved = []
        for dep in node.depends_on:
            sibling = NodeSpec(name=dep, namespace=node.namespace).full_name
            if sibling in by_full:
                resolved.append(sibling)
            elif dep in by_full:
                resolved.append(dep)
            else:
                problems.append(at(graph, i, f"{node.full_name} depends on {dep}, "
                                             "which is not in the graph"))
        graph.nodes[i] = msgspec.structs.replace(node, depends_on=resolved)


def validate(graph: Graph, file: str = "<graph>") -> list[Problem]:
    """Problems visible without running anything: names, commands, dependencies."""
    problems: list[Problem] = []
    seen: set[str] = set()
    for i, node in enumerate(graph.nodes):
        if node.full_name in seen:
            problems.append(at(graph, i, f"two nodes are named {node.full_name}"))
        seen.add(node.full_name)
        if (node.node_class is None) == (node.cmd is None):
            problems.append(at(graph, i, f"{node.full_name}: give exactly one of "
                                         "`class` (module:Class) and `cmd`"))
        if node.node_class is not None and ":" not in node.node_class:
            problems.append(at(graph, i, f"{node.full_name}: class "
                                         f"{node.node_class!r} must be module:Class"))
        if node.cmd is not None and node.process is not None:
            problems.append(at(graph, i, f"{node.full_name}: a command node cannot "
                                         "share a process group"))
    _resolve_dependencies(graph, problems, file)
    problems.extend(Problem(file, 0, 0, text) for text in _cycles(graph))
    return problems


def _cycles(graph: Graph) -> list[str]:
    """Depth first, with a stack of its own rather than recursion: a chain of a thousand
    nodes, each depending on the next, must not exhaust Python's recursion limit."""
    deps = {n.full_name: n.depends_on for n in graph.nodes}
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    found: list[str] = []
    for root in deps:
        if state.get(root) == 2:
            continue
        state[root] = 1
        path = [root]  # the current chain of nodes, each depending on the next
        todo = [iter(deps.get(root, []))]  # each one's dependencies still to visit
        while todo:
            name = next(todo[-1], None)
            if name is None:
                state[path.pop()] = 2
                todo.pop()
            elif state.get(name) == 1:
                found.append("depends_on cycle: "
                             + " -> ".join([*path[path.index(name):], name]))
            elif state.get(name) != 2:
                state[name] = 1
                path.append(name)
                todo.append(iter(deps.get(name, [])))
    return found


def load_graph(path: str, args: dict[str, Any], sets: list[str]) -> Graph:
    set_args, set_params = _parse_sets(sets)
    file = Path(path).resolve()
    graph = Graph(name="")
    budgets: list[tuple[LatencyBudget, Where]] = []
    _expand(file, {**args, **set_args}, "", (), graph, budgets)
    _add_latency_monitor(graph, budgets)
    _add_rate_contracts(graph, (str(file), 0, 0))
    for target, params in set_params.items():
        matches = [i for i, n in enumerate(graph.nodes) if target in (n.name, n.full_name)]
        if not matches:
            raise GraphError([Problem("--set", 0, 0, f"no node named {target}")])
        for i in matches:
            node = graph.nodes[i]
            graph.nodes[i] = msgspec.structs.replace(node, params={**node.params, **params})
    problems = validate(graph, str(file))
    if problems:
        raise GraphError(problems)
    graph.name = graph.name or file.stem
    return graph
