"""A small executor for API-format workflows, the way ComfyUI runs them: validate every input
against the node's INPUT_TYPES, then run the nodes that output nodes depend on, in dependency
order, passing hidden inputs (PROMPT, EXTRA_PNGINFO, UNIQUE_ID).

It checks what ComfyUI's validation would reject (unknown node, missing or unknown input, combo
value not offered, number out of range, link to a missing output or of the wrong type), so a
shipped workflow that drifts from the nodes fails here before a user sees it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN")


class WorkflowError(ValueError):
    pass


@dataclass
class RunResult:
    outputs: dict[str, tuple] = field(default_factory=dict)  # node id -> its outputs
    ui: dict[str, dict] = field(default_factory=dict)  # node id -> its "ui" dict
    order: list[str] = field(default_factory=list)  # node ids in execution order


def _input_definitions(cls) -> dict[str, tuple]:
    types = cls.INPUT_TYPES()
    return {name: definition for section in ("required", "optional")
            for name, definition in types.get(section, {}).items()}


def validate(prompt: dict, classes: dict[str, type]) -> list[str]:
    """Every problem ComfyUI's prompt validation would report, as readable strings."""
    problems = []
    for node_id, node in prompt.items():
        class_type = node.get("class_type")
        cls = classes.get(class_type)
        where = f"#{node_id} {class_type}"
        if cls is None:
            problems.append(f"{where}: unknown node type")
            continue
        definitions = _input_definitions(cls)
        required = cls.INPUT_TYPES().get("required", {})
        inputs = node.get("inputs", {})
        for name in required:
            if name not in inputs:
                problems.append(f"{where}: required input {name!r} missing")
        for name, value in inputs.items():
            if name not in definitions:
                problems.append(f"{where}: unknown input {name!r}")
                continue
            kind = definitions[name][0]
            options = definitions[name][1] if len(definitions[name]) > 1 else {}
            if isinstance(value, list):
                source_id, slot = value
                source = prompt.get(str(source_id))
                if source is None or source.get("class_type") not in classes:
                    problems.append(f"{where}: input {name!r} links to missing node {source_id}")
                    continue
                source_types = classes[source["class_type"]].RETURN_TYPES
                if not 0 <= slot < len(source_types):
                    problems.append(f"{where}: input {name!r} links to output {slot} of #{source_id}, "
                                    f"which has {len(source_types)} outputs")
                    continue
                expected = "COMBO" if isinstance(kind, (list, tuple)) else kind
                if source_types[slot] != expected and "*" not in (source_types[slot], expected):
                    problems.append(f"{where}: input {name!r} ({expected}) linked to a {source_types[slot]} output")
                continue
            if isinstance(kind, (list, tuple)):
                if value not in kind:
                    problems.append(f"{where}: {name}={value!r} is not one of {list(kind)}")
            elif kind in ("INT", "FLOAT"):
                if isinstance(value, bool) or not isinstance(value, (int, float)) or (
                        kind == "INT" and not isinstance(value, int)):
                    problems.append(f"{where}: {name}={value!r} is not a {kind}")
                    continue
                if "min" in options and value < options["min"]:
                    problems.append(f"{where}: {name}={value} is below the minimum {options['min']}")
                if "max" in options and value > options["max"]:
                    problems.append(f"{where}: {name}={value} is above the maximum {options['max']}")
            elif kind == "STRING" and not isinstance(value, str):
                problems.append(f"{where}: {name}={value!r} is not a string")
            elif kind == "BOOLEAN" and not isinstance(value, bool):
                problems.append(f"{where}: {name}={value!r} is not a boolean")
            elif kind not in WIDGET_TYPES:
                problems.append(f"{where}: input {name!r} of type {kind} needs a link, got {value!r}")
    if not any(getattr(classes.get(n.get("class_type")), "OUTPUT_NODE", False) for n in prompt.values()):
        problems.append("the prompt has no output node (ComfyUI answers prompt_no_outputs)")
    return problems


def _needed(prompt: dict, classes: dict[str, type]) -> list[str]:
    """Ids of the nodes the output nodes depend on, dependencies first."""
    order, state = [], {}

    def visit(node_id: str, path: tuple) -> None:
        if state.get(node_id) == "done":
            return
        if node_id in path:
            raise WorkflowError(f"the workflow has a cycle through {' -> '.join(path + (node_id,))}")
        for value in prompt[node_id]["inputs"].values():
            if isinstance(value, list):
                visit(str(value[0]), path + (node_id,))
        state[node_id] = "done"
        order.append(node_id)

    for node_id, node in sorted(prompt.items(), key=lambda item: int(item[0]) if item[0].isdigit() else 0):
        if getattr(classes[node["class_type"]], "OUTPUT_NODE", False):
            visit(node_id, ())
    return order


def run(prompt: dict, classes: dict[str, type], *, workflow: dict | None = None) -> RunResult:
    """Validate, then execute. `workflow` (the UI-format twin) goes to EXTRA_PNGINFO as ComfyUI's
    front end sends it."""
    problems = validate(prompt, classes)
    if problems:
        raise WorkflowError("invalid workflow:\n  " + "\n  ".join(problems))
    result = RunResult()
    extra_pnginfo = {"workflow": workflow} if workflow is not None else None
    for node_id in _needed(prompt, classes):
        node = prompt[node_id]
        cls = classes[node["class_type"]]
        kwargs = {}
        for name, value in node["inputs"].items():
            if isinstance(value, list):
                kwargs[name] = result.outputs[str(value[0])][value[1]]
            else:
                kwargs[name] = value
        for name, kind in cls.INPUT_TYPES().get("hidden", {}).items():
            kwargs[name] = {"PROMPT": prompt, "EXTRA_PNGINFO": extra_pnginfo, "UNIQUE_ID": node_id}.get(kind)
        returned = getattr(cls(), cls.FUNCTION)(**kwargs)
        if isinstance(returned, dict):
            if "ui" in returned:
                result.ui[node_id] = returned["ui"]
            returned = returned.get("result", ())
        if len(returned) != len(cls.RETURN_TYPES):
            raise WorkflowError(f"#{node_id} {node['class_type']} returned {len(returned)} values for "
                                f"RETURN_TYPES {cls.RETURN_TYPES}")
        result.outputs[node_id] = tuple(returned)
        result.order.append(node_id)
    return result


def with_overrides(prompt: dict, overrides: dict[str, dict]) -> dict:
    """A copy of `prompt` with inputs replaced per class type: {"EMOSampler": {"steps": 2}}."""
    prompt = copy.deepcopy(prompt)
    for node in prompt.values():
        for name, value in overrides.get(node["class_type"], {}).items():
            if name in node["inputs"]:
                node["inputs"][name] = value
    return prompt
