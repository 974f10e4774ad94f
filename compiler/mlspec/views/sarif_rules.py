"""What each SARIF rule checks and how to fix it: the policy library, mlspec's own findings and the diagnostic codes.

The texts follow docs/policies.md and docs/errors.md (a test keeps every id documented there covered
here). Ids that are not listed (a project's own Rego policies, a newer code) get a generic text, so
every rule in a SARIF log has a full description and help.
"""

from __future__ import annotations

from dataclasses import dataclass

WAIVER_NOTE = "A deny can be waived only by a Waiver that names this policy id, the resources, a reason and an expiry."
CODES_NOTE = "Diagnostic codes are stable and documented in docs/errors.md."


@dataclass(frozen=True, slots=True)
class RuleText:
    """A rule in words: a one-line summary, what it checks, and how to fix what it finds."""

    summary: str
    checks: str
    fix: str


# Built-in policies (compiler/mlspec/policy/library) and the findings mlspec adds itself.
POLICY_RULES: dict[str, RuleText] = {
    "residency.region": RuleText(
        "Sensitive data stays in the environment's allowed regions",
        "A DataSource classified confidential or pii must live in one of the environment's allowed regions "
        "(data_residency.allowed_regions).",
        "Move the data to an allowed region, or file a Waiver for residency.region with a reason and an expiry.",
    ),
    "residency.derived": RuleText(
        "What is built from sensitive data stays in the allowed regions",
        "FeatureViews, FeatureServices, TrainingPipelines and Deployments built from confidential or pii data "
        "must not use a source outside the environment's allowed regions.",
        "Keep sensitive sources in the environment's allowed regions; a Waiver must name this resource too.",
    ),
    "encryption.at_rest": RuleText(
        "Sensitive sources are encrypted at rest",
        "A confidential or pii DataSource must be encrypted at rest with a KMS key.",
        "Set spec.encryption: {at_rest: true, kms_key: kms://...} on the DataSource.",
    ),
    "encryption.environment_key": RuleText(
        "Staging and production have a KMS key",
        "Staging and production environments must name a KMS key (spec.encryption.kms_key).",
        "Add spec.encryption.kms_key to the environment.",
    ),
    "encryption.tls": RuleText(
        "Staging and production require TLS",
        "Staging and production environments must require TLS in transit (spec.encryption.tls: required).",
        "Set spec.encryption.tls: required in the environment.",
    ),
    "encryption.endpoint_tls": RuleText(
        "Endpoints serve over TLS",
        "Every Deployment endpoint outside the local environment must serve over TLS.",
        "Remove endpoint.tls: false, or set it to true.",
    ),
    "encryption.model_artifacts": RuleText(
        "Models of sensitive data have an artifact key",
        "A model trained on confidential or pii data needs a key to encrypt its artifacts.",
        "Give the environment a KMS key (spec.encryption.kms_key).",
    ),
    "access.auth_required": RuleText(
        "Production deployments require auth",
        "Online Deployments in production must require authentication.",
        "Set spec.auth: {required: true, method: oidc} (or another method) on the Deployment.",
    ),
    "access.no_public_pii": RuleText(
        "Models built on pii are never public",
        "A Deployment whose model is built from pii data must not expose a public endpoint.",
        "Set spec.endpoint.visibility: internal.",
    ),
    "access.owner": RuleText(
        "Every resource has an owner",
        "Every resource names an accountable owner in metadata.owner.",
        "Add metadata.owner (a team or a person).",
    ),
    "rollout.no_direct_in_prod": RuleText(
        "No direct rollouts in production",
        "Production Deployments roll out by canary, A/B, shadow or blue-green, never by direct replacement.",
        "Set spec.rollout.strategy to canary, ab, shadow or blue_green.",
    ),
    "rollout.canary_complete": RuleText(
        "Canary steps end at 100",
        "A canary rollout's steps must end at 100 percent of the traffic.",
        "Make the last value of spec.rollout.steps 100.",
    ),
    "rollout.gpu_fallback": RuleText(
        "GPU work in production can fall back to CPU",
        "GPU serving and training in production must be able to fall back to CPU.",
        "Set the fallback field the finding names (spec.runtime.fallback or spec.resources.gpu.fallback) to cpu.",
    ),
    "governance.evaluation_gates": RuleText(
        "Training pipelines declare evaluation gates",
        "TrainingPipelines in staging and production must declare evaluation gates on their metrics.",
        "Add spec.evaluation.gates (a metric and a threshold each).",
    ),
    "governance.explainability": RuleText(
        "Models of pii features explain themselves",
        "TrainingPipelines whose features come from a pii DataSource must set evaluation.explainability "
        "(deny in staging and production, warn elsewhere).",
        "Set spec.evaluation.explainability: true.",
    ),
    "waiver.expired": RuleText(
        "A waiver has expired",
        "A Waiver past its expiry date waives nothing and denies.",
        "Fix what the waiver covered, or renew the waiver with a new expiry and approval.",
    ),
    "waiver.expiring": RuleText(
        "A waiver expires soon",
        "A Waiver expires within 30 days.",
        "Fix what the waiver covers before it expires, or renew it.",
    ),
    "waiver.unapproved": RuleText(
        "A waiver nobody the environment trusts approved",
        "Outside the local tier a Waiver counts only when its approved_by is an approver of the environment's "
        "access.approval (signed_commit) whose key signed the commit that last changed its file; otherwise it "
        "waives nothing and denies.",
        "Have the approver sign the commit that adds the waiver (git commit -S), with approved_by set to their "
        "key's fingerprint.",
    ),
    "waiver.too_long": RuleText(
        "A waiver runs longer than the environment allows",
        "A Waiver whose expiry is further away than the environment's waivers.max_days (90 by default) waives "
        "nothing and denies.",
        "Set expires within the environment's waivers.max_days and renew the waiver when it ends.",
    ),
    "governance.gate-changed": RuleText(
        "A change alters its own checks",
        "A change under review (--changed-since or --base) alters the policy engine settings, the policy files, or "
        "an environment's access rules, approvers or waiver rules. It is judged by the base's checks, and the "
        "alteration itself denies unless the head commit is signed by an approver the base lists.",
        "Land the change to the checks on its own, reviewed by the approvers (or signed by one of them); it "
        "governs the changes after it.",
    ),
    "waiver.unused": RuleText(
        "A waiver waives nothing",
        "A Waiver matches no finding: the problem it covered is gone, or its policy or resources are misnamed.",
        "Delete the waiver, or correct its policy id and resources.",
    ),
    "policy.error": RuleText(
        "A policy could not be evaluated",
        "A policy did not load, failed, ran longer than policy.timeout_seconds, or its engine crashed. "
        "Evaluation fails closed: the environment is denied.",
        "Read the message: fix the Rego file it names, or raise policy.timeout_seconds in mlspec.yaml.",
    ),
    "policy.malformed": RuleText(
        "A policy returned a malformed finding",
        "A policy returned a finding without a valid id (like area.rule) and a message. It fails closed.",
        'Make the rule return {"id": "area.rule", "path": ..., "message": ..., "fix": ...}.',
    ),
}


def _code(stage: str, meaning: str, fix: str) -> RuleText:
    return RuleText(f"{meaning[0].upper()}{meaning[1:]}", f"{stage}: {meaning}.", f"{fix[0].upper()}{fix[1:]}.")


_READ = "Reading a spec file"
_CHECK = "Checking a spec document"
_TOGETHER = "Checking specs together"
_RESOLVE = "Resolving an environment"
DIAGNOSTIC_RULES: dict[str, RuleText] = {
    "yaml-syntax": _code(
        _READ, "the file is not valid YAML", "tabs in indentation and a missing space after ':' are the usual causes"
    ),
    "duplicate-key": _code(_READ, "the same key twice in one mapping", "keep one of them"),
    "alias-limit": _code(
        _READ, "aliases would expand to more nodes than limits.max_alias_nodes", "inline the data or use fewer aliases"
    ),
    "nesting-too-deep": _code(_READ, "nesting deeper than limits.max_depth", "flatten the structure"),
    "file-too-large": _code(_READ, "the file is larger than limits.max_file_bytes", "split the file"),
    "binary-file": _code(_READ, "the file holds NUL bytes: it is not text", "remove it from the spec folders"),
    "not-utf8": _code(_READ, "the file is not UTF-8", "save it as UTF-8"),
    "empty-file": _code(_READ, "the file has no YAML documents", "add a spec or delete the file"),
    "unsupported-tag": _code(_READ, "a YAML tag such as !!python/object: specs are plain data", "remove the tag"),
    "invalid-key": _code(_READ, "a list or mapping used as a mapping key", "use a plain string key"),
    "invalid-merge": _code(_READ, "a merge key '<<' whose value is not a mapping", "merge a mapping (<<: *defaults)"),
    "too-many-documents": _code(_READ, "more than limits.max_documents documents in one file", "split the file"),
    "unreadable-file": _code(_READ, "the file could not be read", "check the file's permissions and type"),
    "invalid-character": _code(
        _READ,
        "a string holds a control character or a bidirectional control, which would show text other than what it is",
        "remove the character",
    ),
    "number-too-large": _code(_READ, "an integer with more than 64 digits", "check the value"),
    "not-a-mapping": _code(
        _CHECK, "a document is a list or a scalar, not a mapping", "start the document with apiVersion:"
    ),
    "api-version": _code(_CHECK, "apiVersion is not mlspec/v1", "use apiVersion: mlspec/v1"),
    "unknown-kind": _code(_CHECK, "kind is not one mlspec knows", "fix the spelling (the closest kind is suggested)"),
    "missing-field": _code(_CHECK, "a required field is absent", "add the field"),
    "unknown-field": _code(
        _CHECK, "a field the kind does not have", "fix the spelling (the closest field is suggested) or remove it"
    ),
    "wrong-type": _code(_CHECK, "a value of the wrong type", "write the type the field asks for"),
    "invalid-value": _code(
        _CHECK,
        "a value outside the allowed set or format, or a broken rule between fields",
        "use a value the message allows",
    ),
    "out-of-range": _code(_CHECK, "a number or list length outside its bounds", "use a value inside the bounds"),
    "unknown-reference": _code(
        _TOGETHER,
        "a spec names a resource that is not defined",
        "fix the name (the closest is suggested) or define the resource",
    ),
    "duplicate-name": _code(_TOGETHER, "two resources of one kind share a name", "rename one of them"),
    "missing-directory": _code(_TOGETHER, "a folder named in mlspec.yaml does not exist", "create it or fix the path"),
    "outside-project": _code(
        _TOGETHER,
        "a spec folder or file, data path, data_dir or file:// key leads outside the project (or data is a pipe)",
        "keep it inside the project; data elsewhere belongs in object storage or a warehouse",
    ),
    "invalid-override": _code(
        _RESOLVE,
        "an override changes a resource's kind, apiVersion or name",
        "patch only spec and the metadata labels, description and owner",
    ),
    "dependency-cycle": _code(
        _RESOLVE, "resources depend on each other in a cycle", "remove one of the references in the chain"
    ),
    "missing-identity": _code(
        "Rendering",
        "an OIDC endpoint on a shared environment that names no identity issuer",
        "set spec.identity: {issuer: https://...} in the environment",
    ),
    "model-not-trained-yet": _code(
        "Pinning the GitOps hand-off",
        "a served model has no registered version yet, so its InferenceService is left out of the hand-off",
        "it is handed off pinned once a pipeline run of the environment registers a version",
    ),
    "unpinnable-model": _code(
        "Pinning the GitOps hand-off",
        "an InferenceService's model version cannot be resolved in the registry (alias missing, version not "
        "published to the store, registry unreachable)",
        "fix the registry (train, publish or promote a version) and hand off again",
    ),
    "missing-api-keys": _code(
        "Rendering",
        "an API-key endpoint on a cluster that names no auth.api_keys secret",
        "set spec.auth.api_keys: secret://<env>/<name> in the environment's override",
    ),
    "unsupported-by-target": _code(
        "Rendering",
        "a spec asks for something the environment's engine cannot do",
        "change the spec or the environment's target",
    ),
    "image-not-built": _code(
        "Rendering",
        "no runtime image is recorded for the environment's registry (or it names none)",
        "run `mlspec image build --push <registry>` and commit images.lock.json",
    ),
}


def policy_rule(policy: str, example_fix: str = "") -> RuleText:
    """The text of a policy rule; a project's own policy gets a generic one with a fix from its findings."""
    known = POLICY_RULES.get(policy)
    if known is not None:
        return known
    return RuleText(
        f"Project policy {policy}",
        f"A policy of this project: the Rego rule that returns the id '{policy}' (see the project's policies/ folder).",
        example_fix or "Read the finding's message; the rule's Rego source says what it expects.",
    )


def diagnostic_rule(code: str) -> RuleText:
    """The text of a diagnostic code; an undocumented code gets a generic one."""
    return DIAGNOSTIC_RULES.get(code) or RuleText(
        f"Spec problem: {code}",
        f"A problem in the project's spec files reported with the code '{code}'.",
        "Read the message and its hint: they name the field and the fix.",
    )
