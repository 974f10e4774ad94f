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
