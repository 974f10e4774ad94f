# Data residency: confidential and pii data, and everything derived from it, stay in the
# environment's allowed regions. Cross-border use needs a Waiver.
package mlspec.policies.residency

import data.mlspec.lib
import rego.v1

deny contains lib.finding("residency.region", "spec.region", msg, fix) if {
	lib.resource.kind == "DataSource"
	lib.resource.spec.classification in lib.sensitive
	not lib.resource.spec.region in lib.env.data_residency.allowed_regions
	msg := sprintf(
		"%s data of DataSource '%s' lives in region '%s', outside environment '%s' (allowed: %s)",
		[lib.resource.spec.classification, lib.resource.name, lib.resource.spec.region, input.environment.name, concat(", ", lib.env.data_residency.allowed_regions)],
	)
	fix := "move the data to an allowed region, or file a Waiver for residency.region with a reason and an expiry"
}

deny contains lib.finding("residency.derived", "spec", msg, fix) if {
	lib.resource.kind in {"FeatureView", "FeatureService", "TrainingPipeline", "Deployment"}
	some ref in lib.sensitive_sources(lib.resource.ref)
	source := data.mlspec.graph.resources[ref]
	not source.spec.region in lib.env.data_residency.allowed_regions
	msg := sprintf(
		"%s '%s' is built from %s data in region '%s' (%s), outside environment '%s'",
		[lib.resource.kind, lib.resource.name, source.spec.classification, source.spec.region, ref, input.environment.name],
	)
	fix := "keep sensitive sources in the environment's allowed regions; a Waiver must name this resource too"
}

# The artifact store holds the models (and MLflow's copies of training data) of every pipeline of the
# environment: it must sit in an allowed region, and a remote store must say where it is.
remote_stores := {"azure", "s3", "gs", "https"}

deny contains lib.finding("residency.artifact_store", "spec.targets.registry.artifact_store.region", msg, fix) if {
	lib.resource.kind == "Environment"
	store := lib.env.targets.registry.artifact_store
	is_string(store.region)
	not store.region in lib.env.data_residency.allowed_regions
	msg := sprintf(
		"artifact store %s of environment '%s' is in region '%s', outside the allowed regions (%s)",
		[store.uri, input.environment.name, store.region, concat(", ", lib.env.data_residency.allowed_regions)],
	)
	fix := "use a store (storage account or bucket) in an allowed region, or file a Waiver for residency.artifact_store"
}

undeclared_store_region := msg if {
	lib.resource.kind == "Environment"
	store := lib.env.targets.registry.artifact_store
	not is_string(store.region)
	split(store.uri, "://")[0] in remote_stores
	msg := sprintf(
		"artifact store %s of environment '%s' does not declare its region, so residency cannot be checked",
		[store.uri, input.environment.name],
	)
}

undeclared_region_fix := "write artifact_store as {uri: ..., region: <the storage account's or bucket's region>}"

deny contains lib.finding("residency.artifact_store_region", "spec.targets.registry.artifact_store", msg, undeclared_region_fix) if {
	lib.guarded
	msg := undeclared_store_region
}

warn contains lib.finding("residency.artifact_store_region", "spec.targets.registry.artifact_store", msg, undeclared_region_fix) if {
	not lib.guarded
	msg := undeclared_store_region
}
