"""The dependency graph of one environment as text, Mermaid or Graphviz DOT."""

from __future__ import annotations

from mlspec.resolve.graph import ResolvedGraph


def _node_id(ref: str) -> str:
    return ref.replace("/", "__").replace("-", "_")


def render_text(graph: ResolvedGraph) -> str:
    """Resources in apply order, each with what it depends on."""
    lines = [f"environment {graph.name} ({graph.env.spec.tier}, {graph.env.spec.region}): {len(graph.order)} resources"]
    width = max((len(ref) for ref in graph.order), default=0)
    for position, ref in enumerate(graph.order, start=1):
        deps = graph.dependencies[ref]
        marker = " *" if ref in graph.overridden else ""
        after = f"  <- {', '.join(deps)}" if deps else ""
        lines.append(f"{position:>4}. {ref:<{width}}{after}{marker}".rstrip())
    if graph.overridden:
        lines.append("   * overridden in this environment")
    return "\n".join(lines)


def render_mermaid(graph: ResolvedGraph) -> str:
    """A Mermaid flowchart, dependencies pointing at their dependants."""
    lines = ["flowchart LR"]
    for ref in graph.order:
        lines.append(f'    {_node_id(ref)}["{ref}"]')
    for ref in graph.order:
        for dep in graph.dependencies[ref]:
            lines.append(f"    {_node_id(dep)} --> {_node_id(ref)}")
    return "\n".join(lines)


def render_dot(graph: ResolvedGraph) -> str:
    """A Graphviz digraph, one cluster per kind."""
    lines = [f'digraph "{graph.name}" {{', "    rankdir=LR;", "    node [shape=box];"]
    kinds: dict[str, list[str]] = {}
    for ref in graph.order:
        kinds.setdefault(ref.split("/")[0], []).append(ref)
    for kind, refs in kinds.items():
        lines.append(f'    subgraph "cluster_{kind}" {{ label="{kind}";')
        lines.extend(f'        "{ref}";' for ref in refs)
        lines.append("    }")
    for ref in graph.order:
        lines.extend(f'    "{dep}" -> "{ref}";' for dep in graph.dependencies[ref])
    lines.append("}")
    return "\n".join(lines)
