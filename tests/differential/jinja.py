"""Renders template cases with Python's Jinja2, the reference engine for choreo's
jinjatemplate reconcilers (its differential test).

Input (stdin): a JSON array of {"files": {"main.jinja2": "...", ...}, "data": {...}}.
Output (stdout): a JSON array of {"output": "..."} or {"error": "..."}, in order.
Configured as choreo configures minijinja: no autoescaping, trailing newline kept, `break` and
`continue` enabled.
"""
import json
import sys

import jinja2


def render(case):
    env = jinja2.Environment(
        loader=jinja2.DictLoader(case["files"]),
        autoescape=False,
        keep_trailing_newline=True,
        undefined=jinja2.Undefined,
        extensions=["jinja2.ext.loopcontrols"],
    )
    return env.get_template("main.jinja2").render(**case["data"])


def main():
    results = []
    for case in json.load(sys.stdin):
        try:
            results.append({"output": render(case)})
        except Exception as e:  # every failure is a result to compare, not a crash
            results.append({"error": f"{type(e).__name__}: {e}"})
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
