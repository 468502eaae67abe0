#!/usr/bin/env python3
"""Fails when a module of a workspace crate uses one that uses it back (an import circle).

A module is a source file under a crate's `src/`; a use is any `crate::a::b` path in it outside
comments (tests modules at the end of a file are left out). A module using its own parent or
child is not a circle; a module `a` using `b` while `b` or a module under it uses `a` (or a module
under `a`) is. Prints each circle and exits 1 if there is any.
"""
import pathlib
import re
import sys

root = pathlib.Path(__file__).resolve().parent.parent
CRATE_PATH = re.compile(r"\bcrate::((?:[a-z_][a-z0-9_]*::)*[a-z_][a-z0-9_]*)")
USE_GROUP = re.compile(r"\buse crate::\{(.*?)\};", re.S)


def module_of(src: pathlib.Path, file: pathlib.Path) -> str:
    parts = list(file.relative_to(src).with_suffix("").parts)
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return "::".join(parts)


def uses(text: str) -> set[str]:
    text = re.split(r"\n#\[cfg\(test\)\]\s*\nmod tests", text)[0]
    text = re.sub(r"//[^\n]*", "", text)  # doc links are not uses
    found = set(CRATE_PATH.findall(text))
    for group in USE_GROUP.findall(text):
        for item in re.split(r",\s*(?![^{]*\})", group):
            head = item.strip().split("::")[0].split("{")[0].strip()
            if head:
                found.add(head)
    return found


def resolve(path: str, modules: set[str]) -> str | None:
    parts = path.split("::")
    while parts:
        candidate = "::".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def related(a: str, b: str) -> bool:
    return a == b or a.startswith(b + "::") or b.startswith(a + "::") or not a or not b


circles = []
for manifest in sorted(root.glob("**/Cargo.toml")):
    src = manifest.parent / "src"
    if not src.is_dir() or any(p in manifest.parts for p in ("target", ".tools", "node_modules")):
        continue
    files = {module_of(src, f): f for f in src.rglob("*.rs") if "bin" not in f.relative_to(src).parts}
    modules = set(files)
    edges = {m: set() for m in modules}
    for module, file in files.items():
        for path in uses(file.read_text()):
            target = resolve(path, modules)
            if target is not None and not related(module, target):
                edges[module].add(target)
    crate = manifest.parent.relative_to(root)

    def within(module: str, top: str) -> bool:
        return module == top or module.startswith(top + "::")

    found = set()
    for a in sorted(modules):
        for b in sorted(edges[a]):
            # A circle: something in b (or under it) uses a (or something under it).
            for c in sorted(m for m in modules if within(m, b)):
                for d in sorted(edges[c]):
                    if within(d, a):
                        key = tuple(sorted((a, b)))
                        if key not in found:
                            found.add(key)
                            circles.append(f"{crate}: {a} -> {b}, and {c} -> {d}")

for circle in circles:
    print(circle)
if circles:
    print(f"{len(circles)} import circle(s): a module uses one that uses it back", file=sys.stderr)
    sys.exit(1)
print("no import circles")
