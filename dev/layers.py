#!/usr/bin/env python3
"""The house rule of src/, checked: imports point down the layers, and no two modules (or
folders) import each other, however indirectly.

Layers, bottom first (lib.rs says the same): tenant < cells < outside < ops < lambda. The
root's leaves (metrics, telemetry) import nothing of the crate and may be used by any layer
above tenant and cells. A module may import its own folder and any layer below. Reads every
`crate::` path outside comments; prints each offence and exits 1 if there is one.
`--sizes` prints files and lines per folder and the largest files and functions instead.
"""
import pathlib
import re
import sys

SRC = pathlib.Path(__file__).resolve().parent.parent / "src"
LAYERS = ["tenant", "cells", "outside", "ops", "lambda"]
LEAVES = {"metrics", "telemetry"}
PATH = re.compile(r"\bcrate::((?:[a-z_][a-z0-9_]*::)*[a-z_][a-z0-9_]*)")
GROUP = re.compile(r"\buse\s+crate::\{([^;]*)\}", re.S)


def module_of(path: pathlib.Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "mod":
        parts.pop()
    return "::".join(parts)


FN = re.compile(r"^\s*(?:pub(?:\([^)]*\))?\s+)?(?:async\s+)?fn\s+(\w+)")


def functions(path: pathlib.Path):
    """(name, first line, length in lines) of each fn, by brace matching from its line."""
    lines = path.read_text().splitlines()
    out = []
    for i, line in enumerate(lines):
        m = FN.match(line)
        if not m:
            continue
        depth, opened = 0, False
        for j in range(i, len(lines)):
            code = lines[j].split("//")[0]
            depth += code.count("{") - code.count("}")
            opened = opened or "{" in code
            if opened and depth <= 0:
                out.append((m.group(1), i + 1, j - i + 1))
                break
            if not opened and code.rstrip().endswith(";"):
                break
    return out


def sizes() -> int:
    """Files and lines per folder, the largest files and functions (tests included)."""
    files = sorted(p for p in SRC.rglob("*.rs"))
    by_folder: dict[str, list[int]] = {}
    for p in files:
        rel = p.relative_to(SRC)
        key = str(rel.parent) if rel.parent != pathlib.Path(".") else "(root)"
        by_folder.setdefault(key, []).append(len(p.read_text().splitlines()))
    print("folder                files  lines")
    for k, v in sorted(by_folder.items()):
        print(f"{k:<21} {len(v):>5} {sum(v):>6}")
    print("largest files:")
    for p in sorted(files, key=lambda p: -len(p.read_text().splitlines()))[:5]:
        print(f"  {len(p.read_text().splitlines()):>5}  {p.relative_to(SRC.parent)}")
    fns = [(n, p, s, ln) for p in files for (n, s, ln) in functions(p)]
    print("longest functions:")
    for n, p, s, ln in sorted(fns, key=lambda f: -f[3])[:8]:
        print(f"  {ln:>5}  {p.relative_to(SRC.parent)}:{s} {n}")
    return 0


def main() -> int:
    if sys.argv[1:] == ["--sizes"]:
        return sizes()
    files = {module_of(p): p for p in SRC.rglob("*.rs") if "bin" not in p.relative_to(SRC).parts}
    files.pop("lib", None)
    modules = set(files)

    def resolve(path: str) -> str | None:
        parts = path.split("::")
        for n in range(len(parts), 0, -1):
            if "::".join(parts[:n]) in modules:
                return "::".join(parts[:n])
        return None

    edges: dict[str, set[str]] = {m: set() for m in modules}
    for m, p in files.items():
        code = "\n".join(l for l in p.read_text().splitlines() if not l.lstrip().startswith("//"))
        paths = [x.group(1) for x in PATH.finditer(code)]
        for g in GROUP.finditer(code):
            paths += [re.split(r"[:{\s]", x.strip())[0] for x in re.split(r",\s*(?![^{]*\})", g.group(1)) if x.strip()]
        for x in paths:
            t = resolve(x)
            if t and t != m and not m.startswith(t + "::"):
                edges[m].add(t)

    problems = []

    def rank(m: str) -> int:
        top = m.split("::")[0]
        return LAYERS.index(top) if top in LAYERS else -1

    for m, ts in sorted(edges.items()):
        top = m.split("::")[0]
        for t in sorted(ts):
            ttop = t.split("::")[0]
            if top in LEAVES:
                problems.append(f"upward: {m} (a leaf) imports {t}")
            elif ttop in LEAVES and top in ("tenant", "cells"):
                problems.append(f"upward: {m} (pure) imports {t}")
            elif ttop in LAYERS and top in LAYERS and rank(t) > rank(m):
                problems.append(f"upward: {m} ({top}) imports {t} ({ttop})")

    def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
        index, low, stack, on, out, i = {}, {}, [], set(), [], [0]

        def visit(v: str) -> None:
            index[v] = low[v] = i[0]
            i[0] += 1
            stack.append(v)
            on.add(v)
            for w in graph.get(v, ()):
                if w not in index:
                    visit(w)
                    low[v] = min(low[v], low[w])
                elif w in on:
                    low[v] = min(low[v], index[w])
            if low[v] == index[v]:
                scc = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    scc.append(w)
                    if w == v:
                        break
                if len(scc) > 1:
                    out.append(sorted(scc))

        sys.setrecursionlimit(10000)
        for v in sorted(graph):
            if v not in index:
                visit(v)
        return out

    for c in cycles(edges):
        problems.append("cycle between modules: " + " ↔ ".join(c))
    # Folders: each folder (and each module at the root) is one node.
    def folder(m: str) -> str:
        return m.split("::")[0]

    fg: dict[str, set[str]] = {}
    for m, ts in edges.items():
        for t in ts:
            if folder(t) != folder(m):
                fg.setdefault(folder(m), set()).add(folder(t))
    for c in cycles(fg):
        problems.append("cycle between folders: " + " ↔ ".join(c))

    for p in problems:
        print(p)
    n = sum(len(t) for t in edges.values())
    if problems:
        print(f"layers: {len(problems)} problem(s) in {len(modules)} modules, {n} imports between them")
        return 1
    print(f"layers: {len(modules)} modules, {n} imports between them, no cycle, nothing upward")
    return 0


if __name__ == "__main__":
    sys.exit(main())
