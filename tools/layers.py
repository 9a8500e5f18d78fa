#!/usr/bin/env python3
"""Checks that every module of src/ depends only on the floors below it.

Reads each file's `crate::…` and `super::…` paths (comments and `#[cfg(test)] mod tests`
excluded), maps them to modules, and fails on an import cycle between files or an import
from a lower floor to a higher one. The floors, ground first, are LAYERS below; a new
top-level module must be given one. Usage: tools/layers.py [src-dir] [--graph]
"""
import os
import re
import sys
from collections import defaultdict

# Ground floor first. Modules on one floor may use each other (files still may not form a
# cycle); a module may use any floor below its own.
LAYERS = [
    {"util", "config", "metrics", "protocol", "security"},
    {"storage"},
    {"cluster"},
    {"coordinator"},
    {"shard"},
    {"handlers"},
    {"server"},
    {"broker", "admin", "config_file"},
    {"cli"},
    {"crate"},  # lib.rs / main.rs
]


def module_name(root, path):
    parts = os.path.relpath(path, root)[:-3].split("/")
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return "::".join(parts) or "crate"


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    root = args[0] if args else os.path.join(os.path.dirname(__file__), "..", "src")
    modules = {}
    for d, _, files in os.walk(root):
        for f in files:
            if f.endswith(".rs"):
                p = os.path.join(d, f)
                modules[module_name(root, p)] = p
    edges = defaultdict(set)
    for m, p in modules.items():
        if m.endswith("_tests"):
            continue
        src = open(p).read()
        src = re.split(r"#\[cfg\(test\)\]\s*mod tests", src)[0]
        src = "\n".join(l for l in src.split("\n") if not l.lstrip().startswith("//"))
        paths = [x.split("::") for x in re.findall(r"\bcrate::([a-z_]+(?:::[a-z_]+)*)", src)]
        # `super::x` in a/b.rs and in a/b/mod.rs both name a::x.
        parent = [p for p in m.split("::")[:-1] if p]
        for sup in re.findall(r"\bsuper::([a-z_]+(?:::[a-z_]+)*)", src):
            paths.append(parent + sup.split("::"))
        for path in paths:
            for i in range(len(path), 0, -1):
                cand = "::".join(path[:i])
                if cand in modules:
                    if cand != m:
                        edges[m].add(cand)
                    break
    floor = {}
    for i, layer in enumerate(LAYERS):
        for name in layer:
            floor[name] = i
    problems = []
    top = lambda m: m.split("::")[0]
    for m in modules:
        if top(m) not in floor:
            problems.append(f"{m}: top-level module {top(m)!r} has no floor in tools/layers.py")
    for a, bs in sorted(edges.items()):
        for b in sorted(bs):
            fa, fb = floor.get(top(a), -1), floor.get(top(b), -1)
            if fb > fa:
                problems.append(f"upward import: {a} (floor {fa}) uses {b} (floor {fb})")
    # Cycles between files: Tarjan's strongly connected components.
    index, low, stack, on, sccs, counter = {}, {}, [], set(), [], [0]
    sys.setrecursionlimit(10000)

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                sccs.append(sorted(comp))

    for v in sorted(modules):
        if v not in index:
            strong(v)
    for comp in sccs:
        problems.append("import cycle: " + " -> ".join(comp))
    if "--graph" in sys.argv:
        tedges = defaultdict(set)
        for a, bs in edges.items():
            for b in bs:
                if top(a) != top(b):
                    tedges[top(a)].add(top(b))
        for a in sorted(tedges, key=lambda x: floor.get(x, 99)):
            print(f"{a:12} -> {', '.join(sorted(tedges[a], key=lambda x: floor.get(x, 99)))}")
    for p in problems:
        print(p)
    print(f"{len(modules)} modules, {sum(len(b) for b in edges.values())} imports: "
          f"{'OK' if not problems else f'{len(problems)} problem(s)'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
