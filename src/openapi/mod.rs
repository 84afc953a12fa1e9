//! OpenAPI in and out: [`import`] turns an API Gateway export (OpenAPI 3.0 or Swagger 2.0
//! with `x-amazon-apigateway-*` extensions) into a gateway configuration; [`export`] describes
//! the served routes as such a document, so that exporting and importing again gives the
//! same gateway.

pub mod export;
pub mod import;

use crate::integrations::Action;

/// OpenAPI's operation keys and the methods they stand for (`ANY` is API Gateway's).
pub const METHODS: &[(&str, &str)] = &[
    ("get", "GET"),
    ("put", "PUT"),
    ("post", "POST"),
    ("delete", "DELETE"),
    ("options", "OPTIONS"),
    ("head", "HEAD"),
    ("patch", "PATCH"),
    ("x-amazon-apigateway-any-method", "ANY"),
];

/// The action (and, for SQS's path form, the queue) an integration URI names:
/// `arn:aws:apigateway:REGION:SERVICE:action/ACTION` or `...:sqs:path/ACCOUNT/QUEUE`.
pub fn action_for_uri(uri: &str) -> Result<(Action, Option<String>), String> {
    let rest = uri
        .strip_prefix("arn:aws:apigateway:")
        .ok_or_else(|| format!("integration uri {uri:?} is not an API Gateway service URI"))?;
    let mut parts = rest.splitn(3, ':');
    let (_region, service, what) = (parts.next(), parts.next(), parts.next());
    let (Some(service), Some(what)) = (service, what) else {
        return Err(format!(
            "integration uri {uri:?} is not an API Gateway service URI"
        ));
    };
    // A Lambda function: `lambda:path/2015-03-31/functions/ARN/invocations`.
    if service == "lambda" {
        return crate::config::authorizers::lambda_function(uri)
            .filter(|f| f.starts_with("arn:"))
            .map(|f| (Action::LambdaInvoke, Some(f)))
            .ok_or_else(|| format!("integration uri {uri:?} names no Lambda function"));
    }
    if service == "sqs"
        && let Some(path) = what.strip_prefix("path/")
    {
        let queue = path.rsplit('/').next().filter(|q| !q.is_empty());
        return match queue {
            Some(q) => Ok((Action::SqsSendMessage, Some(q.to_string()))),
            None => Err(format!("integration uri {uri:?} names no queue")),
        };
    }
    let action = what.strip_prefix("action/").ok_or_else(|| {
        format!("integration uri {uri:?}: only action/... (and SQS path/...) URIs are supported")
    })?;
    // The services with their own integration first, then any service whose protocol the
    // gateway knows.
    Action::parse(&format!("{service}:{action}"))
        .filter(|a| !matches!(a, Action::LambdaInvoke | Action::Http | Action::Mock))
        .or_else(|| {
            let any = Action::parse(&format!("aws:{service}:{action}"))?;
            crate::integrations::of(any).map(|_| any)
        })
        .map(|a| (a, None))
        .ok_or_else(|| {
            format!(
                "the AWS action {service}:{action} is not supported (supported: {}, and any action of {}, or of a service described in [aws.services.{service}])",
                Action::NAMES[..8].join(", "),
                crate::integrations::aws::SERVICES
                    .iter()
                    .map(|s| s.name)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
}

/// The integration URI of an action (the region is a placeholder: the gateway's own applies).
pub fn uri_for_action(action: Action, region: &str) -> String {
    let (service, name) = match action {
        Action::Aws(a) => (a.service(), a.operation()),
        other => other.name().split_once(':').unwrap_or(("", "")),
    };
    format!("arn:aws:apigateway:{region}:{service}:action/{name}")
}

/// The model a `$ref` points to: `#/definitions/X`, `#/components/schemas/X`, or API
/// Gateway's `https://apigateway.amazonaws.com/restapis/ID/models/X`.
pub fn ref_name(r: &str) -> Option<String> {
    ["#/definitions/", "#/components/schemas/"]
        .iter()
        .find_map(|p| r.strip_prefix(p))
        .or_else(|| r.split_once("/models/").map(|(_, n)| n))
        .filter(|n| !n.is_empty() && !n.contains('/'))
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integration_uris_name_actions_and_queues() {
        assert_eq!(
            action_for_uri("arn:aws:apigateway:eu-west-1:kinesis:action/PutRecords").unwrap(),
            (Action::KinesisPutRecords, None)
        );
        assert_eq!(
            action_for_uri("arn:aws:apigateway:us-east-1:sqs:path/123456789012/partner-q").unwrap(),
            (Action::SqsSendMessage, Some("partner-q".into()))
        );
        assert_eq!(
            action_for_uri("arn:aws:apigateway:us-east-1:states:action/StartSyncExecution")
                .unwrap(),
            (Action::StatesStartSyncExecution, None)
        );
        assert_eq!(
            action_for_uri("arn:aws:apigateway:us-east-1:dynamodb:action/PutItem")
                .unwrap()
                .0
                .name(),
            "aws:dynamodb:PutItem"
        );
        assert!(
            action_for_uri("arn:aws:apigateway:us-east-1:rekognition:action/DetectLabels").is_err()
        );
        assert_eq!(
            action_for_uri("arn:aws:apigateway:us-east-1:lambda:path/2015-03-31/functions/arn:aws:lambda:us-east-1:1:function:f/invocations").unwrap(),
            (
                Action::LambdaInvoke,
                Some("arn:aws:lambda:us-east-1:1:function:f".into())
            )
        );
        assert!(action_for_uri("arn:aws:lambda:us-east-1:1:function:f").is_err());
        let uri = uri_for_action(Action::FirehosePutRecordBatch, "us-east-1");
        assert_eq!(
            action_for_uri(&uri).unwrap().0,
            Action::FirehosePutRecordBatch
        );
        assert_eq!(ref_name("#/components/schemas/Event"), Some("Event".into()));
        assert_eq!(
            ref_name("https://apigateway.amazonaws.com/restapis/abc/models/Event"),
            Some("Event".into())
        );
    }
}
