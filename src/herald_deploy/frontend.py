"""deploy-frontend: build the web app, upload it with the right caching, invalidate CloudFront.

The upload order keeps every visitor on a consistent site: the new hashed assets first
(they coexist with the old ones), then config.json, then index.html last, so no index
ever points at an asset that is not there yet. Stale assets are deleted only once the
invalidation has completed, when no edge can still serve an index that needs them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from herald_deploy.shell import command
from herald_deploy.stack_outputs import read_stack_outputs

if TYPE_CHECKING:
    from herald_deploy.samconfig import Environment
    from herald_deploy.shell import Shell

FRONTEND_DIR = Path("frontend")
DIST_DIR = FRONTEND_DIR / "dist"
# Vite puts content-hashed file names under assets/: a new build never reuses a name.
IMMUTABLE = "public, max-age=31536000, immutable"
# Everything else keeps its name across releases: browsers and CloudFront revalidate it.
REVALIDATE = "no-cache"


@dataclass(frozen=True)
class Site:
    """Where the environment's web app is served from (root stack outputs)."""

    bucket: str
    distribution_id: str
    url: str
    api_url: str


def site_config(api_url: str) -> str:
    """The runtime configuration the app reads from /config.json."""
    return json.dumps({"apiBaseUrl": api_url})


def build(shell: Shell) -> None:
    """The production bundle in frontend/dist, from the locked packages."""
    shell.run(command("npm", "ci", "--no-audit", "--no-fund", cwd=FRONTEND_DIR))
    shell.run(command("npm", "run", "build", cwd=FRONTEND_DIR))


def upload(shell: Shell, site: Site, *, region: str) -> None:
    """Assets, the other files, config.json, and index.html last."""
    bucket = f"s3://{site.bucket}"
    shell.run(
        command(
            "aws", "s3", "sync", f"{DIST_DIR}/assets", f"{bucket}/assets",
            "--region", region, "--cache-control", IMMUTABLE,
        )
    )  # fmt: skip
    # favicon and the like; deletes stale top-level files but never assets/, the index or
    # the configuration, which the steps around it own.
    shell.run(
        command(
            "aws", "s3", "sync", str(DIST_DIR), bucket,
            "--region", region, "--delete",
            "--exclude", "assets/*", "--exclude", "index.html", "--exclude", "config.json",
            "--cache-control", REVALIDATE,
        )
    )  # fmt: skip
    # The index last: it names the assets and reads the configuration, so both are there.
    for name, content_type in (
        ("config.json", "application/json"),
        ("index.html", "text/html; charset=utf-8"),
    ):
        shell.run(
            command(
                "aws", "s3", "cp", f"{DIST_DIR}/{name}", f"{bucket}/{name}",
                "--region", region, "--cache-control", REVALIDATE,
                "--content-type", content_type,
            )
        )  # fmt: skip


def invalidate(shell: Shell, site: Site, *, wait: bool) -> str:
    """Invalidate every cached path (client routes cache index.html under their own URL)."""
    invalidation_id = shell.read(
        command(
            "aws", "cloudfront", "create-invalidation",
            "--distribution-id", site.distribution_id,
            "--paths", "/*",
            "--query", "Invalidation.Id",
            "--output", "text",
        ),
        dry_run_output="I2EXAMPLEINVALIDATION",
    )  # fmt: skip
    wait_command = command(
        "aws", "cloudfront", "wait", "invalidation-completed",
        "--distribution-id", site.distribution_id, "--id", invalidation_id,
    )  # fmt: skip
    if wait:
        shell.run(wait_command)
    else:
        shell.say(f"invalidation {invalidation_id} is in progress; to wait for it: {wait_command}")
    return invalidation_id


def delete_stale_assets(shell: Shell, site: Site, *, region: str) -> None:
    """Remove the previous releases' hashed assets, now that no index refers to them."""
    shell.run(
        command(
            "aws", "s3", "sync", f"{DIST_DIR}/assets", f"s3://{site.bucket}/assets",
            "--region", region, "--delete", "--cache-control", IMMUTABLE,
        )
    )  # fmt: skip


def deploy_frontend(
    shell: Shell,
    environment: Environment,
    *,
    wait: bool,
    dry_run_outputs: dict[str, str] | None = None,
) -> None:
    """Build, write config.json from the stack outputs, upload, invalidate."""
    shell.say(f"deploy-frontend {environment.name}: stack {environment.stack_name}")
    outputs = read_stack_outputs(shell, environment, dry_run_outputs=dry_run_outputs)
    site = Site(
        bucket=outputs["SiteBucketName"],
        distribution_id=outputs["SiteDistributionId"],
        url=outputs["SiteUrl"],
        api_url=outputs["ApiUrl"],
    )
    build(shell)
    shell.write_file(DIST_DIR / "config.json", site_config(site.api_url))
    upload(shell, site, region=environment.region)
    invalidate(shell, site, wait=wait)
    if wait:
        delete_stale_assets(shell, site, region=environment.region)
    else:
        shell.say("stale assets stay until a deploy that waits for its invalidation")
    shell.say(f"the web app is live at {site.url}")
