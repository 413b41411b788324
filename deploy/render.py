"""Fill the nightly schedule templates, and turn tileseg options into checked Flex Template parameters.

    PROJECT=my-proj REGION=europe-west4 BUCKET=my-bucket TAG=abc1234 \\
    SCHEDULER_SA=scheduler@my-proj.iam.gserviceaccount.com python3 deploy/render.py
        writes deploy/rendered/nightly-launch.json and deploy/rendered/nightly-scheduler.yaml
        (``--out DIR`` elsewhere; ``--var NAME=VALUE`` instead of the environment). Nothing is
        written while a variable is missing or malformed, or while the rendered launch request
        has a parameter that deploy/metadata.json would refuse.

    python3 deploy/render.py params INPUT OUTPUT [--batch_size=8 --overwrite --bands 3,2,1 ...]
        prints one ``--parameters=NAME=VALUE`` argument per line for ``gcloud dataflow
        flex-template run`` (deploy/launch.sh uses it), each checked against the metadata's regexes
        before anything reaches Google Cloud, with gcloud's ``^DELIM^`` escape where a value has a
        comma (``gcloud topic escaping``).

Standard library only: it runs wherever gcloud does, without the project's environment.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import string
import sys
from pathlib import Path

DEPLOY = Path(__file__).resolve().parent
METADATA = DEPLOY / "metadata.json"
TEMPLATES = ("nightly-launch.json", "nightly-scheduler.yaml")
DEFAULT_OUT = DEPLOY / "rendered"

#: The variables the templates use, and what a value must look like (so a typo cannot produce a
#: request that parses but points somewhere else, and no value can break the JSON quoting).
VARIABLES = {
    "PROJECT": (r"[a-z][a-z0-9-]{4,28}[a-z0-9]", "a Google Cloud project id, e.g. my-proj"),
    "REGION": (r"[a-z]+-[a-z]+[0-9]+", "a Dataflow region, e.g. europe-west4"),
    "BUCKET": (r"[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]", "a bucket name without gs://, e.g. my-bucket"),
    "TAG": (r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", "the image/template tag launch.sh built, e.g. abc1234"),
    "SCHEDULER_SA": (r"[a-z0-9][a-z0-9-]{4,29}@[a-z0-9.-]+\.gserviceaccount\.com",
                     "the service account Cloud Scheduler calls Dataflow as, e.g. nightly@my-proj.iam.gserviceaccount.com"),
}


class RenderError(ValueError):
    """A missing or bad variable, or a parameter the template metadata refuses; the message says which."""


# --- template parameters (deploy/metadata.json) -------------------------------------------------


def load_metadata(path: Path = METADATA) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def parameter_specs(metadata: dict | None = None) -> dict[str, dict]:
    """Template parameter name → its metadata entry, in the metadata's order."""
    return {p["name"]: p for p in (metadata or load_metadata())["parameters"]}


def check_parameters(params: dict[str, str], metadata: dict | None = None) -> None:
    """Raise RenderError unless every parameter is declared, every value matches all its regexes
    (whole value, as Dataflow matches them) and no required parameter is missing."""
    specs = parameter_specs(metadata)
    problems = []
    for name, value in params.items():
        spec = specs.get(name)
        if spec is None:
            problems.append(f"{name}: not a template parameter (known: {', '.join(specs)})")
            continue
        if not isinstance(value, str):
            problems.append(f"{name}: template parameters are strings, not {type(value).__name__}")
            continue
        for regex in spec.get("regexes", []):
            if not re.fullmatch(regex, value):
                problems.append(f"{name}={value!r} does not match {regex} ({spec['helpText']})")
    missing = [n for n, s in specs.items() if not s.get("isOptional") and n not in params]
    problems += [f"{name}: required" for name in missing]
    if problems:
        raise RenderError("; ".join(problems))


def options_to_parameters(input_uri: str, output_uri: str, options: list[str]) -> dict[str, str]:
    """``INPUT OUTPUT [--name=value | --name value | --overwrite ...]`` → template parameters, checked."""
    specs = parameter_specs()
    params = {"input": input_uri, "output": output_uri}
    i = 0
    while i < len(options):
        arg = options[i]
        if not arg.startswith("--") or arg == "--":
            raise RenderError(f"{arg!r}: expected a tileseg option such as --batch_size=8")
        name, has_value, value = arg[2:].partition("=")
        if name in ("input", "output"):
            raise RenderError(f"--{name}: give INPUT and OUTPUT as the first two arguments")
        if name not in specs:
            raise RenderError(f"--{name} is not a tileseg template parameter (known: "
                              f"{', '.join('--' + n for n in specs if n not in ('input', 'output'))}); "
                              "Dataflow settings go in launch.sh's environment variables")
        if not has_value:
            nxt = options[i + 1] if i + 1 < len(options) else None
            if nxt is not None and not nxt.startswith("--"):
                value, i = nxt, i + 1
            elif name == "overwrite":  # a bare --overwrite, as tileseg run takes it
                value = "true"
            else:
                raise RenderError(f"--{name} needs a value")
        if name in params and name not in ("input", "output"):
            raise RenderError(f"--{name} given twice")
        params[name] = value
        i += 1
    check_parameters(params)
    return params


def gcloud_parameter_flags(params: dict[str, str]) -> list[str]:
    """One ``--parameters=NAME=VALUE`` per parameter. gcloud splits dict flags on commas, so a value
    with a comma (``bands=3,2,1``) gets a delimiter that does not occur in it: ``^~^bands=3,2,1``."""
    flags = []
    for name, value in params.items():
        item = f"{name}={value}"
        if "," in item:
            delim = next((d for d in ("~", "|", "@", "#", ":") if d not in item), None)
            if delim is None:
                raise RenderError(f"{item!r}: no delimiter left to escape its commas for gcloud")
            item = f"^{delim}^{item}"
        flags.append(f"--parameters={item}")
    return flags


# --- templates -------------------------------------------------------------------------------------


def check_variables(variables: dict[str, str], needed: set[str]) -> None:
    missing = sorted(needed - variables.keys())
    bad = [f"{name}={variables[name]!r} is not {VARIABLES[name][1]}" for name in sorted(needed & variables.keys())
           if name in VARIABLES and not re.fullmatch(VARIABLES[name][0], variables[name])]
    if missing or bad:
        hints = [f"{name} ({VARIABLES[name][1]})" if name in VARIABLES else name for name in missing]
        raise RenderError("; ".join(([f"missing: {', '.join(hints)}"] if missing else []) + bad))


def placeholders(text: str) -> set[str]:
    """The ``${NAME}`` / ``$NAME`` names in ``text`` (string.Template's own pattern; written out
    rather than Template.get_identifiers, which needs Python 3.11, for whatever python3 runs gcloud)."""
    template = string.Template(text)
    names = set()
    for match in template.pattern.finditer(text):
        if match.group("invalid") is not None:
            line = text.count("\n", 0, match.start()) + 1
            raise RenderError(f"line {line}: a '$' that is not a ${{NAME}} placeholder (write $$ for a dollar sign)")
        name = match.group("named") or match.group("braced")
        if name:
            names.add(name)
    return names


def render_text(text: str, variables: dict[str, str]) -> str:
    """``${NAME}`` placeholders filled; RenderError naming every missing or malformed variable."""
    check_variables(variables, placeholders(text))
    return string.Template(text).substitute(variables)


def render_all(variables: dict[str, str], src: Path = DEPLOY) -> dict[str, str]:
    """File name → rendered text of each template, checked: the launch request is JSON whose
    parameters the template metadata accepts, and nothing is left unfilled."""
    needed = set()
    texts = {}
    for name in TEMPLATES:
        texts[name] = (src / name).read_text(encoding="utf-8")
        needed |= placeholders(texts[name])
    check_variables(variables, needed)  # every problem at once, before any file is filled
    rendered = {name: render_text(text, variables) for name, text in texts.items()}
    for name, text in rendered.items():
        if "${" in text:
            raise RenderError(f"{name}: unrendered placeholder left: {text[text.index('${'):][:40]!r}")
    request = json.loads(rendered["nightly-launch.json"])
    check_parameters(request["launchParameter"]["parameters"])
    return rendered


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if args[:1] == ["params"]:
            if len(args) < 3:
                raise RenderError("usage: render.py params INPUT OUTPUT [tileseg options]")
            flags = gcloud_parameter_flags(options_to_parameters(args[1], args[2], args[3:]))
            print("\n".join(flags))
            return 0
        p = argparse.ArgumentParser(prog="deploy/render.py", description=__doc__,
                                    formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"where to write (default {DEFAULT_OUT})")
        p.add_argument("--var", action="append", default=[], metavar="NAME=VALUE",
                       help="a variable (overrides the environment)")
        a = p.parse_args(args)
        variables = {k: v for k, v in os.environ.items() if k in VARIABLES}
        for item in a.var:
            name, eq, value = item.partition("=")
            if not eq:
                raise RenderError(f"--var {item!r}: expected NAME=VALUE")
            variables[name] = value
        rendered = render_all(variables)
    except RenderError as exc:
        print(f"render.py: {exc}", file=sys.stderr)
        return 2
    a.out.mkdir(parents=True, exist_ok=True)
    for name, text in rendered.items():
        (a.out / name).write_text(text, encoding="utf-8")
        print(a.out / name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
