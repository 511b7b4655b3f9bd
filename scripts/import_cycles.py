"""Fail when any two modules of embedgate import each other, directly or through others.

import-linter's contracts keep the layers in order between packages; a cycle inside a
package (a composition root and the helper it calls importing each other) slips through
them, so `make lint` runs this too. Uses grimp, the graph library import-linter is built on.
"""

from __future__ import annotations

import sys

import grimp


def cycles(package: str = "embedgate") -> list[tuple[str, ...]]:
    graph = grimp.build_graph(package, include_external_packages=False)
    found: set[tuple[str, ...]] = set()
    for module in sorted(graph.modules):
        for imported in graph.find_modules_directly_imported_by(module):
            back = graph.find_shortest_chain(importer=imported, imported=module)
            if back is not None:
                loop = (module, *back)
                start = loop.index(min(loop[:-1]))
                found.add(loop[start:-1] + loop[:start] + (loop[start],))
    return sorted(found)


def main() -> int:
    found = cycles()
    for loop in found:
        print("import cycle: " + " -> ".join(loop), file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
