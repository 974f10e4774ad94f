# Access: production endpoints require auth, models built on pii are never public, and
# every resource has an accountable owner.
package mlspec.policies.access

import data.mlspec.lib
import rego.v1

deny contains lib.finding("access.auth_required", "spec.auth.required", msg, fix) if {
	lib.online_deployment
	lib.production
	lib.resource.spec.auth.required == false
	msg := sprintf("production Deployment '%s' accepts unauthenticated requests", [lib.resource.name])
	fix := "set spec.auth: {required: true, method: oidc}"
}

# Judged on what enforces it, not on the declaration: auth that nothing in this environment checks is none.
deny contains lib.finding("access.auth_required", "spec.auth.method", msg, fix) if {
	lib.online_deployment
	lib.production
	lib.resource.spec.auth.required == true
	input.environment.endpoints[lib.resource.name].auth == "none"
	msg := sprintf(
		"production Deployment '%s' declares auth.method %s, but nothing in this environment checks it: every request would be served",
		[lib.resource.name, lib.resource.spec.auth.method],
	)
	fix := "use auth.method: oidc with the environment's identity issuer (the mesh verifies the tokens)"
}

deny contains lib.finding("access.no_public_pii", "spec.endpoint.visibility", msg, fix) if {
	lib.online_deployment
	lib.resource.spec.endpoint.visibility == "public"
	count(lib.pii_sources(lib.resource.ref)) > 0
	msg := sprintf("Deployment '%s' exposes a model built on pii data publicly", [lib.resource.name])
	fix := "set spec.endpoint.visibility: internal (or private)"
}

deny contains lib.finding("access.owner", "metadata.owner", msg, fix) if {
	lib.resource.kind != "Environment"
	not has_owner
	msg := sprintf("%s '%s' has no owner", [lib.resource.kind, lib.resource.name])
	fix := "set metadata.owner to the accountable team"
}

has_owner if {
	owner := lib.resource.metadata.owner
	is_string(owner)
	owner != ""
}
