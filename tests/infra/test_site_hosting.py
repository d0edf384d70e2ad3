"""The web app's hosting in template.yaml: a private, KMS-encrypted bucket that only this
CloudFront distribution reads, HTTPS with strict security headers, a SPA fallback that keeps
real errors, access logs, an optional custom domain, and the site origin for the API's CORS."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.conftest import require_tool
from tests.infra.conftest import (
    KMS_GRANTS_ONLY_FOR_AWS_SERVICES,
    Template,
    container_definitions,
    describe,
    nested_stack_parameters,
    policy_statements,
    properties,
    run_tool,
)

DISTRIBUTION_ARN = {
    "Fn::Sub": "arn:${AWS::Partition}:cloudfront::${AWS::AccountId}"
    ":distribution/${SiteDistribution}"
}
CACHING_OPTIMIZED = "658327ea-f89d-4fab-a63d-7e88639e58f6"
STRICT_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self' https://${ApiDomainName}; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
TWO_YEARS = 2 * 365 * 24 * 3600
SAMPLE_STACK_ID = (
    "arn:aws:cloudformation:us-east-1:123456789012:stack/herald-staging/"
    "51af3dc0-da77-11e4-872e-1234567890ab"
)
# S3's bucket naming rules: 3-63 characters, lower-case letters, digits, hyphens and dots.
BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
# Loads the CloudFront Function's code as CloudFront does (a script defining `handler`) and
# runs it on one viewer-request event per URI, printing {uri: rewritten uri}.
RUN_FUNCTION_JS = """
const vm = require("node:vm");
const input = JSON.parse(process.argv[1]);
const context = vm.createContext({});
vm.runInContext(input.code, context);
const rewritten = {};
for (const uri of input.uris) {
  const event = {
    version: "1.0",
    context: { eventType: "viewer-request" },
    viewer: { ip: "192.0.2.1" },
    request: { method: "GET", uri, querystring: {}, headers: {}, cookies: {} },
  };
  rewritten[uri] = context.handler(event).uri;
}
process.stdout.write(JSON.stringify(rewritten));
"""
CLIENT_ROUTES = ["/", "/compose", "/messages/0b7e6c1e-3f4a-4b8e-9a61-1f2d3c4b5a69", "/messages/"]
FILES = ["/assets/index-Ccn6-qPY.js", "/assets/index-3bfh3YV_.css", "/config.json", "/favicon.svg"]


def distribution(template: Template) -> dict[str, Any]:
    config: dict[str, Any] = properties(template, "SiteDistribution")["DistributionConfig"]
    return config


def default_behavior(template: Template) -> dict[str, Any]:
    behavior: dict[str, Any] = distribution(template)["DefaultCacheBehavior"]
    return behavior


def security_headers(template: Template) -> dict[str, Any]:
    policy = properties(template, "SiteResponseHeadersPolicy")["ResponseHeadersPolicyConfig"]
    headers: dict[str, Any] = policy["SecurityHeadersConfig"]
    return headers


def csp_directives(template: Template) -> dict[str, list[str]]:
    """The CSP's directives, each with its sources."""
    csp = security_headers(template)["ContentSecurityPolicy"]["ContentSecurityPolicy"]["Fn::Sub"]
    directives = [directive.split() for directive in csp.split(";")]
    return {name: sources for name, *sources in directives}


def statements_of(template: Template, owner: str) -> list[dict[str, Any]]:
    return [dict(s.statement) for s in policy_statements(template) if s.owner == owner]


def resolve(value: Any, variables: dict[str, str]) -> Any:
    """Evaluate the few intrinsic functions the site's names use (Sub, Select, Split, Ref)."""
    if not isinstance(value, dict):
        return value
    if "Ref" in value:
        return variables[value["Ref"]]
    if "Fn::Select" in value:
        index, items = value["Fn::Select"]
        return resolve(items, variables)[int(index)]
    if "Fn::Split" in value:
        separator, text = value["Fn::Split"]
        return str(resolve(text, variables)).split(separator)
    if "Fn::Sub" in value:
        sub = value["Fn::Sub"]
        text, local = (sub[0], sub[1]) if isinstance(sub, list) else (sub, {})
        scope = {**variables, **{name: resolve(v, variables) for name, v in local.items()}}
        return re.sub(r"\$\{([^}]+)\}", lambda match: str(scope[match.group(1)]), text)
    raise AssertionError(f"cannot resolve {value!r}")


# --------------------------------------------------------------------------- bucket


def test_site_bucket_blocks_every_kind_of_public_access(template: Template) -> None:
    block = properties(template, "SiteBucket")["PublicAccessBlockConfiguration"]

    assert block == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }


def test_site_bucket_has_acls_disabled(template: Template) -> None:
    ownership = properties(template, "SiteBucket")["OwnershipControls"]

    assert ownership == {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}


def test_site_bucket_is_encrypted_with_the_site_key(template: Template) -> None:
    # Given the bucket's default encryption
    [rule] = properties(template, "SiteBucket")["BucketEncryption"][
        "ServerSideEncryptionConfiguration"
    ]

    # Then every object is encrypted with the customer-managed key of the site, through a
    # bucket key (one KMS call per data key rather than per object)
    assert rule["ServerSideEncryptionByDefault"] == {
        "SSEAlgorithm": "aws:kms",
        "KMSMasterKeyID": {"Fn::GetAtt": ["SiteKey", "Arn"]},
    }
    assert rule["BucketKeyEnabled"] is True


def test_site_key_rotates(template: Template) -> None:
    assert properties(template, "SiteKey")["EnableKeyRotation"] is True


def test_site_bucket_keeps_versions(template: Template) -> None:
    assert properties(template, "SiteBucket")["VersioningConfiguration"] == {"Status": "Enabled"}


def test_site_key_lets_only_this_distribution_decrypt(template: Template) -> None:
    # Given the site key's policy (the statements that allow; the one deny limits grants)
    statements = statements_of(template, "SiteKey")
    delegation, cloudfront = [s for s in statements if s["Effect"] == "Allow"]
    assert [s for s in statements if s["Effect"] != "Allow"] == [KMS_GRANTS_ONLY_FOR_AWS_SERVICES]

    # Then the account delegates to IAM, and the only service principal is CloudFront,
    # which may only decrypt, and only for requests of this distribution
    assert delegation["Principal"] == {
        "AWS": {"Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:root"}
    }
    assert cloudfront["Principal"] == {"Service": "cloudfront.amazonaws.com"}
    assert cloudfront["Action"] == "kms:Decrypt"
    assert cloudfront["Condition"] == {"StringEquals": {"AWS:SourceArn": DISTRIBUTION_ARN}}


def test_site_bucket_lets_only_this_distribution_read_objects(template: Template) -> None:
    # Given what the site bucket's policy allows
    [allowed] = [s for s in statements_of(template, "SiteBucketPolicy") if s["Effect"] == "Allow"]

    # Then CloudFront may get objects, for this distribution only, and do nothing else
    assert allowed["Principal"] == {"Service": "cloudfront.amazonaws.com"}
    assert allowed["Action"] == "s3:GetObject"
    assert allowed["Resource"] == {"Fn::Sub": "${SiteBucket.Arn}/*"}
    assert allowed["Condition"] == {"StringEquals": {"AWS:SourceArn": DISTRIBUTION_ARN}}


@pytest.mark.parametrize(
    ("policy_id", "bucket_id"),
    [("SiteBucketPolicy", "SiteBucket"), ("SiteLogBucketPolicy", "SiteLogBucket")],
)
def test_bucket_refuses_requests_without_tls(
    template: Template, policy_id: str, bucket_id: str
) -> None:
    # Given the bucket policy's deny statements
    [deny] = [s for s in statements_of(template, policy_id) if s["Effect"] == "Deny"]

    # Then every S3 action on the bucket and its objects is refused over plain HTTP
    assert properties(template, policy_id)["Bucket"] == {"Ref": bucket_id}
    assert deny["Principal"] == "*"
    assert deny["Action"] == "s3:*"
    assert deny["Resource"] == [
        {"Fn::GetAtt": [bucket_id, "Arn"]},
        {"Fn::Join": ["", [{"Fn::GetAtt": [bucket_id, "Arn"]}, "/*"]]},
    ]
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_site_names_fit_their_services_limits_in_every_environment(template: Template) -> None:
    # Given the names derived from the stack's id (not references: see the template)
    named = {
        "bucket": properties(template, "SiteBucket")["BucketName"],
        "origin access control": properties(template, "SiteOriginAccessControl")[
            "OriginAccessControlConfig"
        ]["Name"],
        "function": properties(template, "SiteRoutingFunction")["Name"],
        "response headers policy": properties(template, "SiteResponseHeadersPolicy")[
            "ResponseHeadersPolicyConfig"
        ]["Name"],
    }

    for environment in template["Parameters"]["Environment"]["AllowedValues"]:
        # When they are resolved for a stack of that environment
        variables = {"Environment": environment, "AWS::StackId": SAMPLE_STACK_ID}
        names = {what: resolve(name, variables) for what, name in named.items()}

        # Then each is unique to the stack (its UUID) and within its service's limit
        assert all(name.endswith("51af3dc0-da77-11e4-872e-1234567890ab") for name in names.values())
        assert BUCKET_NAME.fullmatch(names["bucket"]), names["bucket"]
        assert len(names["origin access control"]) <= 64
        assert re.fullmatch(r"[a-zA-Z0-9-_]{1,64}", names["function"])
        assert len(names["response headers policy"]) <= 128


# --------------------------------------------------------------------- distribution


def test_distribution_reads_the_site_bucket(template: Template) -> None:
    # Given the distribution's one origin
    [origin] = distribution(template)["Origins"]
    template_text, variables = origin["DomainName"]["Fn::Sub"]

    # Then it is the site bucket's regional S3 endpoint, by the same name the bucket has
    assert template_text == "${BucketName}.s3.${AWS::Region}.${AWS::URLSuffix}"
    assert variables["BucketName"] == properties(template, "SiteBucket")["BucketName"]
    assert default_behavior(template)["TargetOriginId"] == origin["Id"]


def test_distribution_signs_every_origin_request_with_sigv4(template: Template) -> None:
    # Given the origin access control and the origin
    [origin] = distribution(template)["Origins"]
    config = properties(template, "SiteOriginAccessControl")["OriginAccessControlConfig"]

    # Then every request to S3 is signed, always, and no legacy origin access identity is used
    assert origin["OriginAccessControlId"] == {"Fn::GetAtt": ["SiteOriginAccessControl", "Id"]}
    assert origin["S3OriginConfig"] == {"OriginAccessIdentity": ""}
    assert config["OriginAccessControlOriginType"] == "s3"
    assert config["SigningBehavior"] == "always"
    assert config["SigningProtocol"] == "sigv4"


def test_viewers_are_redirected_to_https(template: Template) -> None:
    assert default_behavior(template)["ViewerProtocolPolicy"] == "redirect-to-https"


def test_distribution_speaks_http2_and_http3(template: Template) -> None:
    assert distribution(template)["HttpVersion"] == "http2and3"


def test_distribution_compresses_responses(template: Template) -> None:
    assert default_behavior(template)["Compress"] is True


def test_distribution_caches_with_the_managed_caching_optimized_policy(
    template: Template,
) -> None:
    # Given the distribution's behaviours; then the only one caches with CachingOptimized
    assert "CacheBehaviors" not in distribution(template)
    assert default_behavior(template)["CachePolicyId"] == CACHING_OPTIMIZED


def test_distribution_serves_only_reads(template: Template) -> None:
    assert default_behavior(template)["AllowedMethods"] == ["GET", "HEAD"]


def test_price_class_is_a_parameter_defaulting_to_the_cheapest(template: Template) -> None:
    parameter = template["Parameters"]["SitePriceClass"]

    assert distribution(template)["PriceClass"] == {"Ref": "SitePriceClass"}
    assert parameter["Default"] == "PriceClass_100"
    assert parameter["AllowedValues"] == ["PriceClass_100", "PriceClass_200", "PriceClass_All"]


# -------------------------------------------------------------------------- headers


def test_every_response_carries_the_security_headers_policy(template: Template) -> None:
    assert default_behavior(template)["ResponseHeadersPolicyId"] == {
        "Ref": "SiteResponseHeadersPolicy"
    }


def test_content_security_policy_is_exactly_the_strict_one(template: Template) -> None:
    csp = security_headers(template)["ContentSecurityPolicy"]

    assert csp["ContentSecurityPolicy"] == {"Fn::Sub": STRICT_CSP}
    assert csp["Override"] is True


def test_csp_lets_the_app_connect_only_to_itself_and_the_api(template: Template) -> None:
    # Given the API's origin: the ApiUrl output, which the deployment step writes into
    # config.json as apiBaseUrl
    api_origin = template["Outputs"]["ApiUrl"]["Value"]["Fn::Sub"]

    # When the CSP's connect-src is read
    connect_src = csp_directives(template)["connect-src"]

    # Then the app may fetch /config.json from its own origin and call the API, nothing else
    assert connect_src == ["'self'", api_origin]


def test_csp_allows_no_inline_or_foreign_code(template: Template) -> None:
    directives = csp_directives(template)

    assert directives["default-src"] == ["'none'"]
    assert directives["script-src"] == ["'self'"]
    assert directives["style-src"] == ["'self'"]
    assert directives["frame-ancestors"] == ["'none'"]


def test_hsts_lasts_two_years_covers_subdomains_and_asks_for_preload(template: Template) -> None:
    assert security_headers(template)["StrictTransportSecurity"] == {
        "AccessControlMaxAgeSec": TWO_YEARS,
        "IncludeSubdomains": True,
        "Preload": True,
        "Override": True,
    }


def test_browsers_may_not_sniff_content_types(template: Template) -> None:
    assert security_headers(template)["ContentTypeOptions"] == {"Override": True}


def test_no_site_may_frame_the_app(template: Template) -> None:
    assert security_headers(template)["FrameOptions"] == {"FrameOption": "DENY", "Override": True}


def test_no_referrer_leaves_the_app(template: Template) -> None:
    assert security_headers(template)["ReferrerPolicy"] == {
        "ReferrerPolicy": "no-referrer",
        "Override": True,
    }


def test_responses_do_not_reveal_the_site_keys_arn(template: Template) -> None:
    policy = properties(template, "SiteResponseHeadersPolicy")["ResponseHeadersPolicyConfig"]
    removed = {item["Header"] for item in policy["RemoveHeadersConfig"]["Items"]}

    assert "x-amz-server-side-encryption-aws-kms-key-id" in removed


# ---------------------------------------------------------------------- SPA fallback


@pytest.fixture(scope="module")
def rewritten_uris(template: Template) -> dict[str, str]:
    """What the routing function does to each sample URI, run by Node on the function's code."""
    node = require_tool("node")
    code = properties(template, "SiteRoutingFunction")["FunctionCode"]
    event_input = json.dumps({"code": code, "uris": CLIENT_ROUTES + FILES})
    result = run_tool([node, "-e", RUN_FUNCTION_JS, event_input], env={"NODE_OPTIONS": ""})
    assert result.returncode == 0, describe(result)
    rewritten: dict[str, str] = json.loads(result.stdout)
    return rewritten


def test_routing_function_runs_on_every_viewer_request(template: Template) -> None:
    # Given the default behaviour's function associations
    [association] = default_behavior(template)["FunctionAssociations"]
    function = properties(template, "SiteRoutingFunction")

    # Then the routing function (published, on CloudFront's current JS runtime) sees every
    # request before the cache does
    assert association == {
        "EventType": "viewer-request",
        "FunctionARN": {"Fn::GetAtt": ["SiteRoutingFunction", "FunctionARN"]},
    }
    assert function["AutoPublish"] is True
    assert function["FunctionConfig"]["Runtime"] == "cloudfront-js-2.0"


@pytest.mark.parametrize("uri", CLIENT_ROUTES)
def test_client_routes_are_served_the_app_shell(rewritten_uris: dict[str, str], uri: str) -> None:
    assert rewritten_uris[uri] == "/index.html"


@pytest.mark.parametrize("uri", FILES)
def test_files_keep_their_path_so_a_missing_one_stays_an_error(
    rewritten_uris: dict[str, str], uri: str
) -> None:
    assert rewritten_uris[uri] == uri


def test_errors_are_never_answered_with_the_app_shell(template: Template) -> None:
    # Given the distribution; then no custom error response turns a 403/404 into index.html
    assert "CustomErrorResponses" not in distribution(template)


# ------------------------------------------------------------------------------ logs


def test_distribution_writes_access_logs_to_the_separate_log_bucket(template: Template) -> None:
    assert distribution(template)["Logging"] == {
        "Bucket": {"Fn::GetAtt": ["SiteLogBucket", "DomainName"]},
        "Prefix": "cloudfront/",
        "IncludeCookies": False,
    }


def test_log_bucket_keeps_acls_for_cloudfronts_log_delivery(template: Template) -> None:
    # Given the log bucket; CloudFront's standard logging writes through the bucket's ACL
    log_bucket = properties(template, "SiteLogBucket")

    # Then ACLs stay enabled, the bucket still owns what is written, nothing is public
    assert log_bucket["OwnershipControls"] == {
        "Rules": [{"ObjectOwnership": "BucketOwnerPreferred"}]
    }
    assert set(log_bucket["PublicAccessBlockConfiguration"].values()) == {True}
    assert "AccessControl" not in log_bucket


def test_log_bucket_expires_logs_after_the_log_retention(template: Template) -> None:
    [rule] = properties(template, "SiteLogBucket")["LifecycleConfiguration"]["Rules"]

    assert rule["ExpirationInDays"] == {"Ref": "LogRetentionDays"}


def test_site_bucket_server_access_logs_go_to_the_log_bucket(template: Template) -> None:
    # Given the site bucket's logging and the log bucket's allow statements
    logging = properties(template, "SiteBucket")["LoggingConfiguration"]
    [allowed] = [
        s for s in statements_of(template, "SiteLogBucketPolicy") if s["Effect"] == "Allow"
    ]

    # Then S3's log delivery may write under that prefix, for the site bucket only
    assert logging == {"DestinationBucketName": {"Ref": "SiteLogBucket"}, "LogFilePrefix": "s3/"}
    assert allowed["Principal"] == {"Service": "logging.s3.amazonaws.com"}
    assert allowed["Action"] == "s3:PutObject"
    assert allowed["Resource"] == {"Fn::Sub": "${SiteLogBucket.Arn}/s3/*"}
    assert allowed["Condition"] == {
        "ArnLike": {"aws:SourceArn": {"Fn::GetAtt": ["SiteBucket", "Arn"]}},
        "StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}},
    }


# --------------------------------------------------------------------- custom domain


def test_custom_domain_is_served_with_its_certificate_and_tls_1_2_at_least(
    template: Template,
) -> None:
    # Given the distribution's certificate, which depends on the custom-domain condition
    condition, custom, default = distribution(template)["ViewerCertificate"]["Fn::If"]

    # Then a custom domain presents its ACM certificate (SNI) with TLSv1.2_2021 at least,
    # and without one the distribution keeps CloudFront's own certificate and name
    assert condition == "HasSiteDomain"
    assert custom == {
        "AcmCertificateArn": {"Ref": "SiteCertificateArn"},
        "SslSupportMethod": "sni-only",
        "MinimumProtocolVersion": "TLSv1.2_2021",
    }
    assert default == {"CloudFrontDefaultCertificate": True}


def test_custom_domain_is_the_distributions_only_alias(template: Template) -> None:
    assert distribution(template)["Aliases"] == {
        "Fn::If": ["HasSiteDomain", [{"Ref": "SiteDomainName"}], {"Ref": "AWS::NoValue"}]
    }


def test_custom_domain_is_off_by_default(template: Template) -> None:
    # Given the custom-domain parameters and condition
    parameters = template["Parameters"]
    condition = template["Conditions"]["HasSiteDomain"]

    # Then both default to empty, and the condition needs both
    assert parameters["SiteDomainName"]["Default"] == ""
    assert parameters["SiteCertificateArn"]["Default"] == ""
    assert condition == {
        "Fn::And": [
            {"Fn::Not": [{"Fn::Equals": [{"Ref": "SiteDomainName"}, ""]}]},
            {"Fn::Not": [{"Fn::Equals": [{"Ref": "SiteCertificateArn"}, ""]}]},
        ]
    }


@pytest.mark.parametrize(
    ("arn", "accepted"),
    [
        ("", True),
        (
            "arn:aws:acm:us-east-1:111122223333:certificate/0a1b2c3d-4e5f-6789-abcd-ef0123456789",
            True,
        ),
        (
            "arn:aws:acm:eu-west-1:111122223333:certificate/0a1b2c3d-4e5f-6789-abcd-ef0123456789",
            False,
        ),
    ],
)
def test_site_certificate_must_be_in_us_east_1(
    template: Template, arn: str, accepted: bool
) -> None:
    pattern = template["Parameters"]["SiteCertificateArn"]["AllowedPattern"]

    assert bool(re.fullmatch(pattern, arn)) is accepted


def test_domain_and_certificate_are_given_together_or_not_at_all(template: Template) -> None:
    # Given the template's rules
    rules = template["Rules"]
    domain_set = {"Fn::Not": [{"Fn::Equals": [{"Ref": "SiteDomainName"}, ""]}]}
    certificate_set = {"Fn::Not": [{"Fn::Equals": [{"Ref": "SiteCertificateArn"}, ""]}]}

    # Then each of the two, when given, requires the other
    assert rules["SiteDomainNeedsItsCertificate"]["RuleCondition"] == domain_set
    assert rules["SiteDomainNeedsItsCertificate"]["Assertions"][0]["Assert"] == certificate_set
    assert rules["SiteCertificateNeedsItsDomain"]["RuleCondition"] == certificate_set
    assert rules["SiteCertificateNeedsItsDomain"]["Assertions"][0]["Assert"] == domain_set


# --------------------------------------------------------------------------- outputs


def test_outputs_tell_the_deployment_step_and_people_where_the_site_is(
    template: Template,
) -> None:
    outputs = template["Outputs"]

    assert outputs["SiteBucketName"]["Value"] == {"Ref": "SiteBucket"}
    assert outputs["SiteKeyArn"]["Value"] == {"Fn::GetAtt": ["SiteKey", "Arn"]}
    assert outputs["SiteDistributionId"]["Value"] == {"Ref": "SiteDistribution"}
    assert outputs["SiteDistributionDomainName"]["Value"] == {
        "Fn::GetAtt": ["SiteDistribution", "DomainName"]
    }
    assert outputs["SiteLogBucketName"]["Value"] == {"Ref": "SiteLogBucket"}


def test_site_url_and_origin_name_the_custom_domain_when_there_is_one(template: Template) -> None:
    outputs = template["Outputs"]

    assert outputs["SiteUrl"]["Value"] == {
        "Fn::If": [
            "HasSiteDomain",
            {"Fn::Sub": "https://${SiteDomainName}/"},
            {"Fn::Sub": "https://${SiteDistribution.DomainName}/"},
        ]
    }
    # An origin is scheme and host, no path: what a browser sends in its Origin header
    assert outputs["SiteOrigin"]["Value"] == {
        "Fn::If": [
            "HasSiteDomain",
            {"Fn::Sub": "https://${SiteDomainName}"},
            {"Fn::Sub": "https://${SiteDistribution.DomainName}"},
        ]
    }


def test_api_cors_allows_exactly_the_site_origin(template: Template, backend: Template) -> None:
    # Given what the root passes the backend, and the api container's environment
    passed = nested_stack_parameters(template, "BackendStack").get("SiteOrigin")
    api = container_definitions(backend)["api"]
    environment = {variable["Name"]: variable["Value"] for variable in api["Environment"]}

    # Then the api allows exactly the origin the SiteOrigin output names
    assert passed == template["Outputs"]["SiteOrigin"]["Value"]
    assert environment["CORS_ALLOWED_ORIGINS"] == {"Ref": "SiteOrigin"}
