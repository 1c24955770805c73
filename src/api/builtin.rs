//! The APIs every choreo server serves, whatever the project declares.
//!
//! They are written as CRDs (YAML below) and registered through the same path as user CRDs, so
//! discovery, validation and apply treat them exactly alike. `CustomResourceDefinition` is served
//! so that every loaded CRD is also a readable object; `Reconciler`, `Library` and `UpstreamRef`
//! hold the project's business logic and package references in compiled form.

use serde_json::Value;

use super::crd::{ApiResource, CrdError};

/// The group of choreo's own APIs.
pub(crate) const CHOREO_GROUP: &str = "choreo.kform.dev";
/// The group and kind of CRD objects.
pub(crate) const CRD_GROUP: &str = "apiextensions.k8s.io";
pub(crate) const CRD_KIND: &str = "CustomResourceDefinition";

const CRD_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: customresourcedefinitions.apiextensions.k8s.io
spec:
  group: apiextensions.k8s.io
  scope: Cluster
  names:
    kind: CustomResourceDefinition
    plural: customresourcedefinitions
    singular: customresourcedefinition
    shortNames: [crd, crds]
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          apiVersion: {type: string}
          kind: {type: string}
          metadata: {type: object}
          spec:
            type: object
            x-kubernetes-preserve-unknown-fields: true
          status:
            type: object
            x-kubernetes-preserve-unknown-fields: true
"#;

// `for`, `owns` and `watches` name the resources a reconciler acts on; a selector is a map of
// CEL paths to expected values (`match`) plus expressions, kept free-form here because the
// engine validates selectors when it builds the controller.
const RECONCILER_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: reconcilers.choreo.kform.dev
spec:
  group: choreo.kform.dev
  scope: Cluster
  names:
    kind: Reconciler
    plural: reconcilers
    singular: reconciler
    categories: [choreo]
  versions:
  - name: v1alpha1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          apiVersion: {type: string}
          kind: {type: string}
          metadata: {type: object}
          spec:
            type: object
            required: [for]
            properties:
              conditionType: {type: string}
              specUpdate: {type: boolean}
              limits:
                type: object
                properties:
                  timeoutSeconds: {type: integer, minimum: 1, maximum: 86400}
                  memoryMiB: {type: integer, minimum: 1, maximum: 192}
                  steps: {type: integer, minimum: 1000}
              type:
                type: string
                enum: [starlark, kform, gotemplate, jinjatemplate, internal]
              code:
                type: object
                additionalProperties: {type: string}
              for:
                type: object
                required: [group, version, kind]
                properties:
                  group: {type: string}
                  version: {type: string}
                  kind: {type: string}
                  selector:
                    type: object
                    x-kubernetes-preserve-unknown-fields: true
              owns:
                type: array
                items:
                  type: object
                  required: [group, version, kind]
                  properties:
                    group: {type: string}
                    version: {type: string}
                    kind: {type: string}
              watches:
                type: array
                items:
                  type: object
                  required: [group, version, kind]
                  properties:
                    group: {type: string}
                    version: {type: string}
                    kind: {type: string}
                    selector:
                      type: object
                      x-kubernetes-preserve-unknown-fields: true
          status:
            type: object
            x-kubernetes-preserve-unknown-fields: true
"#;

const LIBRARY_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: libraries.choreo.kform.dev
spec:
  group: choreo.kform.dev
  scope: Cluster
  names:
    kind: Library
    plural: libraries
    singular: library
    categories: [choreo]
  versions:
  - name: v1alpha1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          apiVersion: {type: string}
          kind: {type: string}
          metadata: {type: object}
          spec:
            type: object
            required: [code]
            properties:
              type: {type: string}
              code: {type: string}
          status:
            type: object
            x-kubernetes-preserve-unknown-fields: true
"#;

// Upstream choreo's CRD only admits `crd` and `full` while its code acts on `all`; choreo takes
// all three (`full` is a synonym of `all`) and defaults to `crd`.
const UPSTREAMREF_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: upstreamrefs.choreo.kform.dev
spec:
  group: choreo.kform.dev
  scope: Cluster
  names:
    kind: UpstreamRef
    plural: upstreamrefs
    singular: upstreamref
    categories: [pkg, knet]
  versions:
  - name: v1alpha1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          apiVersion: {type: string}
          kind: {type: string}
          metadata: {type: object}
          spec:
            type: object
            required: [url, ref]
            properties:
              type:
                type: string
                enum: [crd, all, full]
                default: crd
              priority:
                type: integer
                default: 10
              url: {type: string, minLength: 1}
              directory: {type: string}
              ref:
                type: object
                required: [name]
                properties:
                  type:
                    type: string
                    enum: [hash, tag, branch]
                    default: hash
                  name: {type: string, minLength: 1}
              credentials: {type: string}
              includes:
                type: array
                items: {type: string}
          status:
            type: object
            x-kubernetes-preserve-unknown-fields: true
"#;

/// The built-in CRD objects, in registration order.
pub(crate) fn builtin_crds() -> Vec<Value> {
    [CRD_CRD, RECONCILER_CRD, LIBRARY_CRD, UPSTREAMREF_CRD]
        .iter()
        .map(|text| {
            // The texts above are constants checked by the unit test below.
            serde_yaml_ng::from_str(text).unwrap_or(Value::Null)
        })
        .collect()
}

/// The built-in APIs, ready to register.
pub(crate) fn builtin_resources() -> Result<Vec<ApiResource>, CrdError> {
    builtin_crds()
        .iter()
        .map(|crd| {
            let mut res = ApiResource::from_crd(crd)?;
            res.builtin = true;
            Ok(res)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_parse_and_register() {
        let res = builtin_resources().unwrap();
        let names: Vec<_> = res.iter().map(|r| r.full_name()).collect();
        assert_eq!(
            names,
            [
                "customresourcedefinitions.apiextensions.k8s.io",
                "reconcilers.choreo.kform.dev",
                "libraries.choreo.kform.dev",
                "upstreamrefs.choreo.kform.dev"
            ]
        );
        assert!(res.iter().all(|r| r.builtin && !r.namespaced && r.schema.is_some()));
    }
}
