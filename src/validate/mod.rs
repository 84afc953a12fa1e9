//! Request validation, as API Gateway's request validators: required path, query string and
//! header parameters, and a JSON Schema model for the body (draft 4 unless the schema's
//! `$schema` names another, such as 2020-12). Runs after authorization and before any
//! template or upstream call. Pure: a request's parts in, a verdict out.

use std::path::Path;

use serde_json::{Value as Json, json};

use crate::config::{RequiredParameters, RouteConfig};

/// Failures listed in a detailed answer, at most.
const MAX_DETAILS: usize = 20;

/// A route's compiled validation rules.
pub struct Validator {
    model: Option<jsonschema::Validator>,
    required: RequiredParameters,
    /// Whether 400s list what failed and where.
    details: bool,
}

impl std::fmt::Debug for Validator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Validator")
            .field("model", &self.model.is_some())
            .field("required", &self.required)
            .finish()
    }
}

pub mod body;

pub use crate::error::Invalid;

/// Compiles a JSON Schema: draft 4 (API Gateway's) unless `$schema` names a draft.
pub fn compile_schema(schema: &Json) -> Result<jsonschema::Validator, String> {
    let mut options = jsonschema::options();
    if schema.get("$schema").is_none() {
        options = options.with_draft(jsonschema::Draft::Draft4);
    }
    options.build(schema).map_err(|e| e.to_string())
}

/// Reads and compiles a model file.
pub fn load_model(path: &Path) -> Result<(Json, jsonschema::Validator), String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: cannot read the model: {e}", path.display()))?;
    let schema: Json = serde_json::from_str(&text)
        .map_err(|e| format!("{}: the model is not JSON: {e}", path.display()))?;
    let compiled = compile_schema(&schema)
        .map_err(|e| format!("{}: not a valid JSON Schema: {e}", path.display()))?;
    Ok((schema, compiled))
}

impl Validator {
    /// The route's validator, or `None` when it validates nothing.
    pub fn for_route(route: &RouteConfig) -> Result<Option<Validator>, String> {
        let model = match &route.request_model {
            Some(path) => Some(load_model(path)?.1),
            None => None,
        };
        if model.is_none() && route.required_parameters.is_empty() {
            return Ok(None);
        }
        Ok(Some(Validator {
            model,
            required: route.required_parameters.clone(),
            details: route.validation_details,
        }))
    }

    /// Whether the body must be JSON (there is a model).
    pub fn has_model(&self) -> bool {
        self.model.is_some()
    }

    /// Every required parameter is present (a header or query parameter that is present but
    /// empty counts as present, as in API Gateway).
    pub fn check_parameters(
        &self,
        path: &[(String, String)],
        query: &[(String, String)],
        headers: &http::HeaderMap,
    ) -> Result<(), Invalid> {
        let mut missing: Vec<(&str, &str)> = Vec::new();
        for name in &self.required.path {
            if !path.iter().any(|(k, v)| k == name && !v.is_empty()) {
                missing.push(("path", name));
            }
        }
        for name in &self.required.querystring {
            if !query.iter().any(|(k, _)| k == name) {
                missing.push(("querystring", name));
            }
        }
        for name in &self.required.header {
            if !headers.contains_key(name.as_str()) {
                missing.push(("header", name));
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        let names: Vec<&str> = missing.iter().map(|(_, n)| *n).collect();
        Err(Invalid {
            message: format!("Missing required request parameters: [{}]", names.join(", ")),
            errors: self.details.then(|| {
                missing
                    .iter()
                    .map(|(place, name)| {
                        json!({"in": place, "name": name, "message": "required parameter is missing"})
                    })
                    .collect()
            }),
        })
    }

    /// The body matches the model. `document` is the parsed body (`None`: empty).
    pub fn check_body(&self, document: Option<&Json>) -> Result<(), Invalid> {
        let Some(model) = &self.model else {
            return Ok(());
        };
        let invalid = |errors: Vec<Json>| Invalid {
            message: "Invalid request body".into(),
            errors: self.details.then_some(errors),
        };
        let Some(document) = document else {
            return Err(invalid(vec![
                json!({"path": "", "message": "the body is empty; the model needs a JSON body"}),
            ]));
        };
        let errors: Vec<Json> = model
            .iter_errors(document)
            .take(MAX_DETAILS)
            .map(|e| {
                json!({
                    "path": e.instance_path().to_string(),
                    "schemaPath": e.schema_path().to_string(),
                    "message": e.to_string(),
                })
            })
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(invalid(errors))
        }
    }

    /// The failure for a body that is not JSON at all, in this route's style.
    pub fn not_json(&self, detail: &str) -> Invalid {
        Invalid {
            message: "Invalid request body".into(),
            errors: self.details.then(|| {
                vec![json!({"path": "", "message": format!("the body is not JSON: {detail}")})]
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validator(schema: &Json, details: bool) -> Validator {
        Validator {
            model: Some(compile_schema(schema).unwrap()),
            required: RequiredParameters::default(),
            details,
        }
    }

    #[test]
    fn draft_4_is_the_default_and_a_named_draft_is_honoured() {
        // Draft 4's boolean exclusiveMaximum; in 2020-12 it would have to be a number.
        let d4 = validator(
            &json!({"type": "number", "maximum": 10, "exclusiveMaximum": true}),
            false,
        );
        assert!(d4.check_body(Some(&json!(9))).is_ok());
        assert!(d4.check_body(Some(&json!(10))).is_err());
        let d2020 = validator(
            &json!({"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "array", "prefixItems": [{"type": "string"}]}),
            false,
        );
        assert!(d2020.check_body(Some(&json!(["a", 1]))).is_ok());
        assert!(d2020.check_body(Some(&json!([1]))).is_err());
    }

    #[test]
    fn failures_are_api_gateway_messages_with_details_only_on_request() {
        let schema = json!({"type": "object", "required": ["type"], "properties": {"ts": {"type": "integer"}}});
        let plain = validator(&schema, false)
            .check_body(Some(&json!({"ts": "x"})))
            .unwrap_err();
        assert_eq!(
            plain,
            Invalid {
                message: "Invalid request body".into(),
                errors: None
            }
        );
        let detailed = validator(&schema, true)
            .check_body(Some(&json!({"ts": "x"})))
            .unwrap_err();
        let errors = detailed.errors.unwrap();
        assert_eq!(errors.len(), 2, "{errors:?}");
        let paths: Vec<&str> = errors.iter().map(|e| e["path"].as_str().unwrap()).collect();
        assert!(paths.contains(&"/ts") && paths.contains(&""), "{paths:?}");
    }

    #[test]
    fn missing_parameters_are_named_in_order() {
        let v = Validator {
            model: None,
            required: RequiredParameters {
                path: vec!["partner".into()],
                querystring: vec!["page".into(), "size".into()],
                header: vec!["x-tenant".into()],
            },
            details: false,
        };
        let mut headers = http::HeaderMap::new();
        let err = v
            .check_parameters(
                &[("partner".into(), "p".into())],
                &[("size".into(), String::new())],
                &headers,
            )
            .unwrap_err();
        assert_eq!(
            err.message,
            "Missing required request parameters: [page, x-tenant]"
        );
        headers.insert("x-tenant", http::HeaderValue::from_static("t"));
        assert!(
            v.check_parameters(
                &[("partner".into(), "p".into())],
                &[("page".into(), "1".into()), ("size".into(), "2".into())],
                &headers
            )
            .is_ok()
        );
    }
}
