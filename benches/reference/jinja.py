"""Times Python's Jinja2 on one template set for benches/templates.rs: reads
{"files": {...}, "data": {...}} on stdin, renders main.jinja2 N times (first argument) and
prints the seconds taken."""
import json
import sys
import time

import jinja2


def main():
    n = int(sys.argv[1])
    case = json.load(sys.stdin)
    env = jinja2.Environment(loader=jinja2.DictLoader(case["files"]), autoescape=False, keep_trailing_newline=True)
    template = env.get_template("main.jinja2")
    template.render(**case["data"])
    start = time.perf_counter()
    for _ in range(n):
        template.render(**case["data"])
    print(time.perf_counter() - start)


if __name__ == "__main__":
    main()
