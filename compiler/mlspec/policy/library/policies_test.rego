# Unit tests of the policy library: `mlspec policy test` runs every test_ rule.
package mlspec.policies_test

import data.mlspec.policies.access
import data.mlspec.policies.encryption
import data.mlspec.policies.governance
import data.mlspec.policies.residency
import data.mlspec.policies.rollout
import rego.v1

prod_env := {"name": "prod", "spec": {
	"tier": "production", "region": "uae-north",
	"data_residency": {"jurisdiction": "AE", "allowed_regions": ["uae-north", "uae-central"]},
	"encryption": {"kms_key": "kms://prod", "tls": "required"},
}}

dev_env := {"name": "dev", "spec": object.union(prod_env.spec, {"tier": "development"})}

pii_source := {"kind": "DataSource", "name": "txns", "ref": "DataSource/txns", "metadata": {"name": "txns", "owner": "payments"}, "spec": {
	"type": "file", "classification": "pii", "region": "uae-north",
	"encryption": {"at_rest": true, "kms_key": "kms://payments"},
}}

foreign_source := object.union(pii_source, {"spec": {"region": "eu-west"}})

pipeline := {"kind": "TrainingPipeline", "name": "fraud", "ref": "TrainingPipeline/fraud", "metadata": {"name": "fraud", "owner": "payments"}, "spec": {
	"resources": {"gpu": {"type": "nvidia-h100", "count": 1, "fallback": "cpu"}},
	"evaluation": {"gates": {"auc": ">= 0.8"}, "explainability": true},
}}

deployment := {"kind": "Deployment", "name": "fraud-api", "ref": "Deployment/fraud-api", "metadata": {"name": "fraud-api", "owner": "payments"}, "spec": {
	"mode": "online",
	"rollout": {"strategy": "canary", "steps": [10, 50, 100]},
	"runtime": {"device": "gpu", "fallback": "cpu"},
	"auth": {"required": true, "method": "oidc"},
	"endpoint": {"visibility": "internal", "tls": true},
}}

graph_of(source) := {
	"resources": {source.ref: source, pipeline.ref: pipeline, deployment.ref: deployment},
	"dependencies": {source.ref: [], pipeline.ref: [source.ref], deployment.ref: [pipeline.ref]},
}

ids(findings) := {f.id | some f in findings}

test_resident_pii_passes if {
	count(residency.deny) == 0 with input as {"resource": pii_source, "environment": prod_env} with data.mlspec.graph as graph_of(pii_source)
}

test_foreign_pii_is_denied if {
	"residency.region" in ids(residency.deny) with input as {"resource": foreign_source, "environment": prod_env}
		with data.mlspec.graph as graph_of(foreign_source)
}

test_models_built_on_foreign_pii_are_denied if {
	"residency.derived" in ids(residency.deny) with input as {"resource": deployment, "environment": prod_env}
		with data.mlspec.graph as graph_of(foreign_source)
}

# Where a cluster's Feast offline store reads a source (object storage, named per environment by an override)
# is the data's location: residency applies to it as to any other.
object_store_pii := object.union(pii_source, {"spec": {"path": "az://uae-bank-ml-prod-features/txns.parquet"}})

foreign_bucket_pii := object.union(pii_source, {"spec": {"type": "object_store", "uri": "s3://eu-ml-features/txns.parquet", "region": "eu-west"}})

test_pii_in_resident_object_storage_passes if {
	count(residency.deny) == 0 with input as {"resource": object_store_pii, "environment": prod_env}
		with data.mlspec.graph as graph_of(object_store_pii)
}

test_pii_in_foreign_object_storage_is_denied_with_what_is_built_on_it if {
	"residency.region" in ids(residency.deny) with input as {"resource": foreign_bucket_pii, "environment": prod_env}
		with data.mlspec.graph as graph_of(foreign_bucket_pii)
	"residency.derived" in ids(residency.deny) with input as {"resource": pipeline, "environment": prod_env}
		with data.mlspec.graph as graph_of(foreign_bucket_pii)
}

test_public_data_may_live_anywhere if {
	public := object.union(foreign_source, {"spec": {"classification": "public"}})
	count(residency.deny) == 0 with input as {"resource": public, "environment": prod_env} with data.mlspec.graph as graph_of(public)
}

env_resource(env) := {"kind": "Environment", "name": env.name, "ref": sprintf("Environment/%s", [env.name]), "spec": env.spec}

with_store(env, store) := {"name": env.name, "spec": object.union(env.spec, {"targets": {"registry": {"artifact_store": store}}})}

test_artifact_store_in_an_allowed_region_passes if {
	env := with_store(prod_env, {"uri": "azure://uaebankmlprod/models", "region": "uae-north", "credentials": null})
	count(residency.deny) == 0 with input as {"resource": env_resource(env), "environment": env}
}

test_artifact_store_in_another_region_is_denied if {
	env := with_store(prod_env, {"uri": "s3://bank-models/prod", "region": "eu-west-1", "credentials": null})
	"residency.artifact_store" in ids(residency.deny) with input as {"resource": env_resource(env), "environment": env}
}

test_remote_store_must_declare_its_region if {
	prod := with_store(prod_env, {"uri": "s3://bank-models", "region": null, "credentials": null})
	"residency.artifact_store_region" in ids(residency.deny) with input as {"resource": env_resource(prod), "environment": prod}
	dev := with_store(dev_env, {"uri": "s3://bank-models", "region": null, "credentials": null})
	count(residency.deny) == 0 with input as {"resource": env_resource(dev), "environment": dev}
	"residency.artifact_store_region" in ids(residency.warn) with input as {"resource": env_resource(dev), "environment": dev}
}

test_local_store_needs_no_region if {
	env := with_store(prod_env, {"uri": "file:///var/models", "region": null, "credentials": null})
	count(residency.deny | residency.warn) == 0 with input as {"resource": env_resource(env), "environment": env}
}

test_unencrypted_pii_is_denied if {
	plain := object.union(pii_source, {"spec": {"encryption": {"at_rest": false, "kms_key": null}}})
	"encryption.at_rest" in ids(encryption.deny) with input as {"resource": plain, "environment": prod_env}
}

test_production_needs_tls_and_a_key if {
	env := {"name": "prod", "spec": object.union(prod_env.spec, {"encryption": {"kms_key": null, "tls": "preferred"}})}
	found := ids(encryption.deny) with input as {"resource": {"kind": "Environment", "name": "prod", "ref": "Environment/prod", "metadata": {"name": "prod"}, "spec": env.spec}, "environment": env}
	found == {"encryption.environment_key", "encryption.tls"}
}

test_models_on_pii_need_an_artifact_key if {
	env := {"name": "dev", "spec": object.union(dev_env.spec, {"encryption": {"kms_key": null}})}
	"encryption.model_artifacts" in ids(encryption.deny) with input as {"resource": pipeline, "environment": env}
		with data.mlspec.graph as graph_of(pii_source)
}

test_production_needs_auth if {
	open := object.union(deployment, {"spec": {"auth": {"required": false, "method": "none"}}})
	"access.auth_required" in ids(access.deny) with input as {"resource": open, "environment": prod_env}
	count(access.deny) == 0 with input as {"resource": open, "environment": dev_env}
}

test_production_auth_is_judged_by_what_enforces_it if {
	unchecked := object.union(prod_env, {"endpoints": {deployment.name: {"auth": "none", "tls": true}}})
	"access.auth_required" in ids(access.deny) with input as {"resource": deployment, "environment": unchecked}
	checked := object.union(prod_env, {"endpoints": {deployment.name: {"auth": "oidc", "tls": true}}})
	count(access.deny) == 0 with input as {"resource": deployment, "environment": checked}
}

test_pii_models_are_never_public if {
	public := object.union(deployment, {"spec": {"endpoint": {"visibility": "public", "tls": true}}})
	"access.no_public_pii" in ids(access.deny) with input as {"resource": public, "environment": dev_env}
		with data.mlspec.graph as graph_of(pii_source)
}

test_every_resource_has_an_owner if {
	orphan := object.union(pii_source, {"metadata": {"name": "txns", "owner": null}})
	"access.owner" in ids(access.deny) with input as {"resource": orphan, "environment": dev_env}
}

test_no_direct_rollout_in_production if {
	direct := object.union(deployment, {"spec": {"rollout": {"strategy": "direct"}}})
	"rollout.no_direct_in_prod" in ids(rollout.deny) with input as {"resource": direct, "environment": prod_env}
	count(rollout.deny) == 0 with input as {"resource": direct, "environment": dev_env}
}

test_batch_and_edge_deployments_have_no_endpoint_rules if {
	every mode in ["batch", "edge"] {
		job := object.union(deployment, {"spec": {"mode": mode, "rollout": {"strategy": "direct"}, "auth": {"required": false, "method": "none"}, "endpoint": {"visibility": "public", "tls": false}}})
		count(rollout.deny) == 0 with input as {"resource": job, "environment": prod_env}
		count(access.deny) == 0 with input as {"resource": job, "environment": prod_env}
		count(encryption.deny) == 0 with input as {"resource": job, "environment": prod_env}
	}
}

test_canary_must_reach_100 if {
	stuck := object.union(deployment, {"spec": {"rollout": {"strategy": "canary", "steps": [10, 50]}}})
	"rollout.canary_complete" in ids(rollout.deny) with input as {"resource": stuck, "environment": dev_env}
}

test_production_gpu_needs_a_cpu_fallback if {
	gpu_only := object.union(deployment, {"spec": {"runtime": {"device": "gpu", "fallback": "none"}}})
	"rollout.gpu_fallback" in ids(rollout.deny) with input as {"resource": gpu_only, "environment": prod_env}
	gpu_training := object.union(pipeline, {"spec": {"resources": {"gpu": {"fallback": "none"}}}})
	"rollout.gpu_fallback" in ids(rollout.deny) with input as {"resource": gpu_training, "environment": prod_env}
}

test_gated_promotion_in_production if {
	ungated := {"kind": "TrainingPipeline", "name": "fraud", "ref": "TrainingPipeline/fraud", "metadata": pipeline.metadata, "spec": {
		"resources": pipeline.spec.resources,
		"evaluation": {"gates": {}, "explainability": true},
	}}
	"governance.evaluation_gates" in ids(governance.deny) with input as {"resource": ungated, "environment": prod_env}
		with data.mlspec.graph as graph_of(pii_source)
}

# A pipeline reading its features through a FeatureService from ``features``, its labels from ``labels``.
training_graph(features, labels) := {
	"resources": {
		features.ref: features, labels.ref: labels, "FeatureView/txn-stats": {"kind": "FeatureView", "name": "txn-stats", "ref": "FeatureView/txn-stats", "spec": {"source": features.name}},
		"FeatureService/fraud-features": {"kind": "FeatureService", "name": "fraud-features", "ref": "FeatureService/fraud-features", "spec": {}},
		pipeline.ref: pipeline,
	},
	"dependencies": {
		features.ref: [], labels.ref: [], "FeatureView/txn-stats": [features.ref],
		"FeatureService/fraud-features": ["FeatureView/txn-stats"], pipeline.ref: ["FeatureService/fraud-features", labels.ref],
	},
}

opaque := object.union(pipeline, {"spec": {"features": "fraud-features", "evaluation": {"explainability": false}}})

labels_of(classification) := object.union(pii_source, {"name": "labels", "ref": "DataSource/labels", "spec": {"classification": classification}})

confidential_source := object.union(pii_source, {"spec": {"classification": "confidential"}})

local_env := {"name": "local", "spec": object.union(dev_env.spec, {"tier": "local"})}

test_pii_models_explain_themselves if {
	graph := training_graph(pii_source, labels_of("confidential"))
	found := governance.deny with input as {"resource": opaque, "environment": prod_env} with data.mlspec.graph as graph
	some finding in found
	finding.id == "governance.explainability"
	finding.message == "TrainingPipeline 'fraud' uses pii features (from DataSource/txns) but does not declare an explainability report"
	"governance.explainability" in ids(governance.warn) with input as {"resource": opaque, "environment": local_env}
		with data.mlspec.graph as graph
	count(governance.deny) == 0 with input as {"resource": opaque, "environment": local_env} with data.mlspec.graph as graph

	# explained: no finding
	explained := object.union(opaque, {"spec": {"evaluation": {"explainability": true}}})
	not "governance.explainability" in ids(governance.deny) with input as {"resource": explained, "environment": prod_env}
		with data.mlspec.graph as graph
	not "governance.explainability" in ids(governance.warn) with input as {"resource": explained, "environment": local_env}
		with data.mlspec.graph as graph

	# confidential features with pii labels: the labels are not model inputs, so nothing to attribute
	labels_only := training_graph(confidential_source, labels_of("pii"))
	not "governance.explainability" in ids(governance.deny) with input as {"resource": opaque, "environment": prod_env}
		with data.mlspec.graph as labels_only
	not "governance.explainability" in ids(governance.warn) with input as {"resource": opaque, "environment": local_env}
		with data.mlspec.graph as labels_only
}

test_the_compliant_platform_passes_everything if {
	every subject in [pii_source, pipeline, deployment] {
		count(residency.deny | encryption.deny | access.deny | rollout.deny | governance.deny) == 0 with input as {"resource": subject, "environment": prod_env}
			with data.mlspec.graph as graph_of(pii_source)
	}
}
