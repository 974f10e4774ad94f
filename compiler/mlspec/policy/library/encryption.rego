# Encryption: at rest for every store of confidential or pii data (with a KMS key), TLS in
# transit for every endpoint, and a key for the artifacts of models trained on such data.
package mlspec.policies.encryption

import data.mlspec.lib
import rego.v1

deny contains lib.finding("encryption.at_rest", "spec.encryption", msg, fix) if {
	lib.resource.kind == "DataSource"
	lib.resource.spec.classification in lib.sensitive
	not encrypted(lib.resource.spec.encryption)
	msg := sprintf("%s DataSource '%s' is not encrypted at rest with a KMS key", [lib.resource.spec.classification, lib.resource.name])
	fix := "set encryption: {at_rest: true, kms_key: kms://...}"
}

encrypted(encryption) if {
	encryption.at_rest == true
	encryption.kms_key != null
}

deny contains lib.finding("encryption.environment_key", "spec.encryption.kms_key", msg, fix) if {
	lib.resource.kind == "Environment"
	lib.guarded
	lib.env.encryption.kms_key == null
	msg := sprintf("%s environment '%s' has no KMS key for the stores and artifacts it holds", [lib.env.tier, input.environment.name])
	fix := "set spec.encryption.kms_key: kms://..."
}

deny contains lib.finding("encryption.tls", "spec.encryption.tls", msg, fix) if {
	lib.resource.kind == "Environment"
	lib.guarded
	lib.env.encryption.tls != "required"
	msg := sprintf("%s environment '%s' does not require TLS in transit (tls: %s)", [lib.env.tier, input.environment.name, lib.env.encryption.tls])
	fix := "set spec.encryption.tls: required"
}

deny contains lib.finding("encryption.endpoint_tls", "spec.endpoint.tls", msg, fix) if {
	lib.online_deployment
	lib.env.tier != "local"
	lib.resource.spec.endpoint.tls == false
	msg := sprintf("Deployment '%s' serves without TLS", [lib.resource.name])
	fix := "set spec.endpoint.tls: true"
}

deny contains lib.finding("encryption.model_artifacts", "spec", msg, fix) if {
	lib.resource.kind == "TrainingPipeline"
	count(lib.sensitive_sources(lib.resource.ref)) > 0
	lib.env.encryption.kms_key == null
	msg := sprintf(
		"TrainingPipeline '%s' trains on confidential or pii data but environment '%s' has no key to encrypt its model artifacts",
		[lib.resource.name, input.environment.name],
	)
	fix := "set the environment's spec.encryption.kms_key"
}
